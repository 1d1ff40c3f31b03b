"""Lambda entry point of the query API (API Gateway HTTP API → Mangum → FastAPI)."""

from giftmarket.http.lambda_entry import lambda_handler
from giftmarket.http.query_app import create_query_app

app = create_query_app()
handler = lambda_handler(app, service="giftmarket-query-api")

"""Lambda entry point of the query API (API Gateway HTTP API → Mangum → FastAPI)."""

from aws_lambda_powertools import Logger
from mangum import Mangum

from giftmarket.http.query_app import create_query_app

logger = Logger(service="giftmarket-query-api")
app = create_query_app()
handler = logger.inject_lambda_context(Mangum(app, lifespan="off"), clear_state=True)

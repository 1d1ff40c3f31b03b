"""Lambda entry point of the command API (API Gateway HTTP API → Mangum → FastAPI)."""

from giftmarket.http.command_app import create_command_app
from giftmarket.http.lambda_entry import lambda_handler

app = create_command_app()
handler = lambda_handler(app, service="giftmarket-command-api")

"""Lambda entry point of the command API (API Gateway HTTP API → Mangum → FastAPI)."""

from aws_lambda_powertools import Logger
from mangum import Mangum

from giftmarket.http.command_app import create_command_app

logger = Logger(service="giftmarket-command-api")
app = create_command_app()
handler = logger.inject_lambda_context(Mangum(app, lifespan="off"), clear_state=True)

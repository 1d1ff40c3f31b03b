"""The command API: every change runs as one unit of work on the primary."""

from __future__ import annotations

from fastapi import FastAPI

from giftmarket.http.problems import install_problem_handlers


def create_command_app() -> FastAPI:
    app = FastAPI(
        title="giftmarket command API",
        version="0.1.0",
        description="Writes: one transaction on the primary per command, events to the outbox.",
    )
    install_problem_handlers(app)
    return app

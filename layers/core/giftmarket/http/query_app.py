"""The query API: answers from the read models, falling back to the replica (or primary)."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Response

from giftmarket.http import query_routes
from giftmarket.http.deps import ContainerDep
from giftmarket.http.problems import RETRY_AFTER_SECONDS, ProblemApp, install_problem_handlers
from giftmarket.http.schemas import HealthPublic
from giftmarket.queries.health import system_health

router = APIRouter()


@router.get("/api/health", response_model=HealthPublic)
async def health(container: ContainerDep, response: Response) -> dict[str, object]:
    """Whether the primary, the replica (with its lag) and the cache can be used now."""
    report = system_health(container.database, container.redis)
    if report["status"] == "down":
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return report


def create_query_app() -> FastAPI:
    app = ProblemApp(
        # API Gateway routes exact paths; a redirect to a slash-less URL (built from Mangum's
        # placeholder host) would be wrong, so a trailing slash is simply not found.
        redirect_slashes=False,
        title="giftmarket query API",
        version="0.1.0",
        description="Reads: read models in Redis first, SQL on the replica as the fallback.",
    )
    install_problem_handlers(app)
    app.include_router(router)
    app.include_router(query_routes.router)
    return app

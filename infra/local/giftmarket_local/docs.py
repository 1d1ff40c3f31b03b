"""The local runner's `/docs`: Swagger UI served from installed files, never from a CDN.

In AWS no function serves documentation: API Gateway routes only the API's paths
(template.yaml). Locally the runner serves one page for both APIs (`Gateway.openapi`). The page
is FastAPI's own Swagger UI page; its script, stylesheet and icon are those of the
`fastapi-offline` package (the `dev` extra), served under /docs/assets/, so the page works on
a machine without internet. That package is chosen over `swagger-ui-bundle` because it follows
swagger-ui-dist 5 (it is the current Swagger UI, and renders OpenAPI 3.1, which FastAPI writes;
swagger-ui-bundle still ships Swagger UI 4, which refuses 3.1 documents). Only its static files
are used: it needs nothing of ours and we call none of its code.
"""

from __future__ import annotations

import importlib.util
from functools import cache, lru_cache
from pathlib import Path

from fastapi.openapi.docs import get_swagger_ui_html

DOCS_PATH = "/docs"
ASSETS_PATH = "/docs/assets/"
OPENAPI_PATH = "/openapi.json"
HTML_TYPE = "text/html; charset=utf-8"
CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
}


@cache
def assets_folder() -> Path:
    """fastapi-offline's static folder, found without importing the package."""
    spec = importlib.util.find_spec("fastapi_offline")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "fastapi-offline is missing: run infra/local/bootstrap.sh (make run does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "static"


@cache
def page() -> bytes:
    response = get_swagger_ui_html(
        openapi_url=OPENAPI_PATH,
        title="giftmarket API (local)",
        swagger_js_url=f"{ASSETS_PATH}swagger-ui-bundle.js",
        swagger_css_url=f"{ASSETS_PATH}swagger-ui.css",
        swagger_favicon_url=f"{ASSETS_PATH}favicon.png",
        oauth2_redirect_url=None,
        # No online validator badge: it would call validator.swagger.io.
        swagger_ui_parameters={"validatorUrl": None},
    )
    return bytes(response.body)


# Bounded: the names come from requests, and any name is remembered, found or not.
@lru_cache(maxsize=64)
def asset(name: str) -> tuple[str, bytes] | None:
    """(content type, bytes) of one of the page's files, or None: only plain file names of the
    folder with a known type are served (no sub-paths, nothing else on disk)."""
    content_type = CONTENT_TYPES.get(Path(name).suffix)
    if content_type is None or "/" in name or name.startswith("."):
        return None
    path = assets_folder() / name
    if not path.is_file():
        return None
    return content_type, path.read_bytes()

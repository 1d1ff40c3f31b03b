"""FastAPI dependencies as annotated aliases; tests override them on the app."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends

from giftmarket.bootstrap import Container, get_container

ContainerDep = Annotated[Container, Depends(get_container)]

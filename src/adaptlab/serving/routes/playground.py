"""``GET /``: the playground page (a static HTML page that talks to the API from the browser)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import HTMLResponse

router = APIRouter()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def playground() -> HTMLResponse:
    from adaptlab.serving.playground import PAGE

    return HTMLResponse(PAGE)

"""The pages of the browser UI. Each is a server-rendered shell; its script calls the public API
(through the gateway) with the signed-in user's token, which lives only in the browser tab."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from coca_platform.errors import NotFound
from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from coca_web.resources import Resources

router = APIRouter(include_in_schema=False)


def resources(request: Request) -> Resources:
    res: Resources = request.state.resources
    return res


def render(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """A page; pages hold no user data (the browser fetches it), yet are revalidated on every visit."""
    html = resources(request).render(template, **context)
    return HTMLResponse(html, status, headers={"Cache-Control": "no-cache"})


def _uuid(value: str, what: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise NotFound(f"{what} {value!r} not found") from None


@router.get("/")
async def home() -> Response:
    return RedirectResponse("/agents", status_code=303)


@router.get("/login")
async def login(request: Request) -> HTMLResponse:
    return render(request, "login.html", page="login", title="Log in")


@router.get("/signup")
async def signup(request: Request) -> HTMLResponse:
    return render(request, "signup.html", page="signup", title="Sign up")


@router.get("/agents")
async def agents(request: Request) -> HTMLResponse:
    return render(request, "agents.html", page="agents", title="Agents")


@router.get("/conversations/{conversation_id}")
async def conversation(request: Request, conversation_id: str) -> HTMLResponse:
    found = _uuid(conversation_id, "conversation")
    return render(request, "chat.html", page="chat", title="Chat", conversation_id=found)


@router.get("/knowledge")
async def knowledge(request: Request) -> HTMLResponse:
    return render(request, "knowledge.html", page="knowledge", title="Knowledge")


@router.get("/knowledge/{knowledge_base_id}")
async def knowledge_base(request: Request, knowledge_base_id: str) -> HTMLResponse:
    found = _uuid(knowledge_base_id, "knowledge base")
    return render(
        request, "knowledge_base.html", page="knowledge", title="Knowledge base", knowledge_base_id=found
    )


@router.get("/usage")
async def usage(request: Request) -> HTMLResponse:
    return render(request, "usage.html", page="usage", title="Usage")


@router.api_route("/static/{path:path}", methods=["GET", "HEAD"])
async def static(request: Request, path: str) -> Response:
    return resources(request).assets.response(request, path)

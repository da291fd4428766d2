"""Server-rendered pages (Jinja2): login, fleet, corrections, models, canary, audit, training.

Pages render what the caller may do: mutating buttons only appear for roles that may use them
(the API checks again). Live parts and buttons use the JSON API through `static/app.js`.
"""

from __future__ import annotations

from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlsplit

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from jinja2.utils import htmlsafe_json_dumps

from dashboards import crud, review
from dashboards.auth import Principal
from dashboards.deps import MaybeUser, ServicesDep, SessionDep
from dashboards.errors import DashboardError, TooManyRequests
from dashboards.routes.auth import authenticate, open_session
from dashboards.routes.canary import canary_view
from dashboards.routes.models import curve, model_overview
from dashboards.routes.training import learner_charts, training_status

templates = Jinja2Templates(directory=Path(__file__).resolve().parent.parent / "templates")
router = APIRouter(include_in_schema=False)


def _refused(request: Request, user: Principal | None) -> Response | None:
    """Why a page is not shown to this caller, or None: anonymous callers go to the login page; robot tokens (no
    dashboard role) get a 403, as on the API: a robot's credentials read models, not the fleet's pages."""
    if user is None:
        return RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
    if not user.at_least("viewer"):
        message = escape(f"the dashboard's pages need a dashboard role ({user.name} is a robot token)")
        return HTMLResponse(f"<!doctype html><title>403 Forbidden</title><p>{message}</p>", status_code=403)
    return None


def _page(request: Request, user: Principal, name: str, **context: Any) -> Response:
    context.update(
        user=user,
        can_review=user.at_least("reviewer"),
        can_operate=user.at_least("operator"),
        is_admin=user.at_least("admin"),
        page=name,
    )
    return templates.TemplateResponse(request, f"{name}.html", context)


def _safe_next(target: str | None) -> str:
    """`target` when it is a path on this site, else /fleet. Browsers read a backslash as a slash and drop tabs and
    newlines from URLs, so "/\\evil.example" or "/\t/evil.example" would leave the site as "//evil.example" does."""
    if not target or not target.startswith("/") or any(c in target for c in "\\\t\r\n") or target.startswith("//"):
        return "/fleet"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/fleet"


MAX_LOGIN_FORM_BYTES = 16 * 1024


def _cross_site(request: Request) -> bool:
    """Whether a browser posted this from another site: its Sec-Fetch-Site says so (every current browser sends it;
    unlike Origin against Host it holds behind a proxy that rewrites Host), or, from an older browser, its Origin
    names another host. Scripts (no such headers) are not browsers and carry no victim's cookies."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site == "cross-site"
    origin = request.headers.get("origin")
    return origin is not None and urlsplit(origin).netloc != request.headers.get("host")


@router.get("/", response_class=HTMLResponse)
def index() -> Response:
    return RedirectResponse("/fleet", status_code=303)


@router.get("/login", response_class=HTMLResponse)
def login_page(request: Request, next: str | None = None, error: str | None = None) -> Response:
    return templates.TemplateResponse(request, "login.html", {"next": _safe_next(next), "error": error, "user": None})


@router.post("/login", response_class=HTMLResponse)
async def login_form(request: Request, services: ServicesDep, session: SessionDep) -> Response:
    """HTML form login (urlencoded body parsed here, so no multipart dependency).

    Refused: a body over MAX_LOGIN_FORM_BYTES (413: a login form is a few hundred bytes, and argon2 hashes what it is
    given), and a form posted from another site (403: login CSRF, which would log the victim's browser into the
    attacker's account; browsers send Origin and Sec-Fetch-Site on every form POST)."""
    if _cross_site(request):
        return HTMLResponse("<!doctype html><title>403</title><p>login from another site refused</p>", 403)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_LOGIN_FORM_BYTES:
            message = f"a login form is at most {MAX_LOGIN_FORM_BYTES} bytes"
            return HTMLResponse(f"<!doctype html><title>413</title><p>{message}</p>", 413)
    form = {k: v[0] for k, v in parse_qs(body.decode("utf-8", "replace")).items()}
    target = _safe_next(form.get("next"))
    client = request.client.host if request.client else None
    try:
        user = authenticate(
            session,
            services=services,
            username=form.get("username", ""),
            password=form.get("password", ""),
            client=client,
        )
    except TooManyRequests as e:
        context = {"next": target, "error": "throttled", "retry_after_s": e.retry_after_s, "user": None}
        headers = {"Retry-After": str(e.retry_after_s)}
        return templates.TemplateResponse(request, "login.html", context, status_code=429, headers=headers)
    if user is None:
        return RedirectResponse(f"/login?next={quote(target)}&error=1", status_code=303)
    response = RedirectResponse(target, status_code=303)
    open_session(response, session=session, services=services, user=user)
    return response


@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request, services: ServicesDep, user: MaybeUser) -> Response:
    if (refused := _refused(request, user)) is not None:
        return refused
    assert user is not None
    status = services.fleet_status()
    # Into a <script type="application/json"> element: `htmlsafe_json_dumps` writes <, >, & and ' as \u escapes, so
    # no heartbeat text (an embodiment, an error, an instruction) can close the element and open a script of its own.
    return _page(request, user, "fleet", status=status, status_json=htmlsafe_json_dumps(status, default=str))


@router.get("/corrections", response_class=HTMLResponse)
def corrections_page(
    request: Request,
    session: SessionDep,
    user: MaybeUser,
    status: str = "pending",
    robot_id: str | None = None,
    task: str | None = None,
    version: str | None = None,
    selected: str | None = None,
) -> Response:
    from dashboards.routes.corrections import list_corrections

    if (refused := _refused(request, user)) is not None:
        return refused
    assert user is not None
    rows = list_corrections(session, user, status=status, robot_id=robot_id, task=task, version=version, limit=200)
    current = next((r for r in rows if r.id == selected), rows[0] if rows else None)
    detail = review.detail(session, request.app.state.episode_cache, current) if current is not None else None
    filters = {"status": status, "robot_id": robot_id or "", "task": task or "", "version": version or ""}
    return _page(request, user, "corrections", rows=rows, current=current, detail=detail, filters=filters)


@router.get("/models", response_class=HTMLResponse)
def models_page(request: Request, services: ServicesDep, user: MaybeUser) -> Response:
    if (refused := _refused(request, user)) is not None:
        return refused
    assert user is not None
    overview: dict[str, Any] | None = None
    error = None
    chart = ""
    try:
        overview = model_overview(services)
        chart = curve(overview)
    except DashboardError as e:
        error = e.detail
    return _page(request, user, "models", overview=overview, chart=chart, error=error)


@router.get("/canary", response_class=HTMLResponse)
def canary_page(request: Request, services: ServicesDep, user: MaybeUser) -> Response:
    if (refused := _refused(request, user)) is not None:
        return refused
    assert user is not None
    view: dict[str, Any] | None = None
    error = None
    try:
        view = canary_view(services)
    except DashboardError as e:
        error = e.detail
    return _page(request, user, "canary", view=view, error=error)


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request, session: SessionDep, user: MaybeUser, action: str | None = None) -> Response:
    if (refused := _refused(request, user)) is not None:
        return refused
    assert user is not None
    entries = crud.list_audit(session, limit=300, action=action or None)
    return _page(request, user, "audit", entries=entries, action=action or "")


@router.get("/training", response_class=HTMLResponse)
def training_page(request: Request, services: ServicesDep, user: MaybeUser) -> Response:
    if (refused := _refused(request, user)) is not None:
        return refused
    assert user is not None
    data = training_status(services)
    charts = learner_charts(data["learner"])
    return _page(request, user, "training", data=data, charts=charts)

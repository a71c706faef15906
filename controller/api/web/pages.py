"""The dashboard's pages and fragments (see :mod:`controller.api.web`).

Pages (HTML shells, the same for everyone; what they show comes after sign-in, through the
API and the fragments below, so a page never holds data its reader may not see):

================================================ ==================================
path                                             what
================================================ ==================================
``/``, ``/ui/sites/{site}/``                     sign in; then each role's home
``/ui/sites/{site}/operator``                    the live page: the interval now,
                                                 alerts, the map, the last result,
                                                 devices, settlements (op, aud)
``/ui/sites/{site}/map``                         the feeder map, full page
``/ui/sites/{site}/history``                     charts over a day, week or month
``/ui/sites/{site}/prosumer/{participant}``      a prosumer's orders, trades,
                                                 readings, balances, earnings
``/ui/sites/{site}/auditor``                     records, anchors, verify, exports
``/ui/sites/{site}/governance``                  members, governed values and their
                                                 history, proposals, votes; a
                                                 member votes (op, aud, pros)
================================================ ==================================

Fragments (``/ui/sites/{site}/parts/{name}``, HTML for htmx, bearer token as for the API):
``now``, ``result``, ``devices``, ``settlements``, ``alerts``, ``records``, ``governance``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Final

from fastapi import APIRouter, FastAPI, Query, Request
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from controller.api.deps import ApiError, PrincipalDep, SiteDep, require_participant
from controller.api.routes_dashboard import DashboardDep, audit_records
from controller.api.routes_governance import get_governance
from controller.api.routes_reads import Cursor, devices_of
from controller.auth import Role
from controller.service import Service
from market.domain import utc_label

HERE: Final = Path(__file__).parent
STATIC: Final = HERE / "static"
TEMPLATES: Final = Jinja2Templates(directory=HERE / "templates")

CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
"""The pages' Content-Security-Policy: this origin only, no inline script or style."""

SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}

PAGES: Final = {
    "operator": ("Operator", ("operator", "auditor")),
    "map": ("Feeder map", ("operator", "auditor", "prosumer")),
    "history": ("History", ("operator", "auditor", "prosumer")),
    "auditor": ("Audit", ("operator", "auditor")),
    "governance": ("Governance", ("operator", "auditor", "prosumer")),
}
"""Page -> (title, the roles that may open it)."""

router = APIRouter(include_in_schema=False)


def _fmt_kwh(wh: Any) -> str:  # noqa: ANN401 - Jinja filter on stored JSON values
    return "–" if wh is None else f"{int(wh) / 1000:.2f} kWh"


def _fmt_price(units_per_kwh: Any) -> str:  # noqa: ANN401
    return "–" if units_per_kwh is None else f"{int(units_per_kwh) / 1_000_000:.4f}/kWh"


def _fmt_units(units: Any) -> str:  # noqa: ANN401
    return "–" if units is None else f"{int(units) / 1_000_000:,.6f}"


def _fmt_pu(value: Any) -> str:  # noqa: ANN401
    return "–" if value is None else f"{float(value):.3f}"


def _fmt_time(unix_s: Any) -> str:  # noqa: ANN401
    return "–" if unix_s is None else utc_label(int(unix_s))


def _fmt_duration(seconds: Any) -> str:  # noqa: ANN401
    """``86400`` -> ``1 d``, ``5400`` -> ``1 h 30 min``, ``45`` -> ``45 s``."""
    left = int(seconds)
    if left == 0:
        return "none"
    parts = []
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size} {unit}")
            left %= size
    return " ".join(parts)


def _short(value: Any, n: int = 10) -> str:  # noqa: ANN401
    text = "" if value is None else str(value)
    return text if len(text) <= n + 4 else f"{text[:n]}…"


TEMPLATES.env.filters.update(
    kwh=_fmt_kwh,
    price=_fmt_price,
    units=_fmt_units,
    pu=_fmt_pu,
    utc=_fmt_time,
    short=_short,
    duration=_fmt_duration,
)


def _page(request: Request, service: Service, page: str, **extra: Any) -> HTMLResponse:  # noqa: ANN401
    title, roles = PAGES.get(page, ("Account", ("operator", "auditor", "prosumer")))
    context = {
        "site_id": service.site_id,
        "site_name": service.site.name,
        "page": page,
        "title": title,
        "roles": " ".join(roles),
        "participant": "",
        "participants": [str(p.id) for p in service.site.participants],
        "interval_s": service.site.interval_s,
        **extra,
    }
    reply = TEMPLATES.TemplateResponse(request, f"{page}.html", context)
    reply.headers.update(SECURITY_HEADERS)
    return reply


def _fragment(request: Request, name: str, **context: Any) -> HTMLResponse:  # noqa: ANN401
    reply = TEMPLATES.TemplateResponse(request, f"parts/{name}.html", context)
    reply.headers.update(SECURITY_HEADERS)
    return reply


@router.get("/")
def root(request: Request) -> RedirectResponse:
    """The sign-in page of the service's site."""
    service: Service = request.app.state.service
    return RedirectResponse(f"/ui/sites/{service.site_id}/", status_code=307)


@router.get("/docs")
def api_docs() -> HTMLResponse:
    """The interactive API docs (Swagger UI, shipped in the package: no CDN)."""
    return get_swagger_ui_html(
        openapi_url="/openapi.json",
        title="PeerGrid API",
        swagger_js_url="/static/vendor/swagger-ui-bundle.js",
        swagger_css_url="/static/vendor/swagger-ui.css",
        swagger_favicon_url="/static/favicon.svg",
    )


@router.get("/favicon.ico")
def favicon() -> FileResponse:
    """The icon browsers ask for by themselves."""
    return FileResponse(STATIC / "favicon.svg", media_type="image/svg+xml")


@router.get("/ui/sites/{site}/")
def signin_page(request: Request, service: SiteDep) -> HTMLResponse:
    """Sign in with the browser's wallet; then the role's home page."""
    return _page(request, service, "signin")


@router.get("/ui/sites/{site}/prosumer/{participant}")
def prosumer_page(request: Request, service: SiteDep, participant: str) -> HTMLResponse:
    """A prosumer's page (the data comes only for the prosumer itself, or op/aud)."""
    if participant not in {str(p.id) for p in service.site.participants}:
        raise ApiError(404, "unknown_participant", f"no participant {participant!r}")
    return _page(request, service, "prosumer", participant=participant)


@router.get("/ui/sites/{site}/{page}")
def page_of(request: Request, service: SiteDep, page: str) -> HTMLResponse:
    """The operator, map, history, auditor and governance pages."""
    if page not in PAGES:
        raise ApiError(404, "not_found", f"no page {page!r}")
    if page == "governance":  # without governance the page says so, and asks for nothing
        return _page(request, service, page, has_governance=service.governance is not None)
    return _page(request, service, page)


# -- fragments -------------------------------------------------------------------------------


@router.get("/ui/sites/{site}/parts/now")
def part_now(
    request: Request, service: SiteDep, principal: PrincipalDep, dashboard: DashboardDep
) -> HTMLResponse:
    """The interval now: phase, the next gate closure (counted down by the page)."""
    del principal
    return _fragment(request, "now", now=dashboard.phase(), site=service.site)


@router.get("/ui/sites/{site}/parts/result")
def part_result(
    request: Request, service: SiteDep, principal: PrincipalDep, dashboard: DashboardDep
) -> HTMLResponse:
    """The last result: status and reason, prices, energy, grid, AC check."""
    del service, principal
    rows = dashboard.recent(back=10, ahead=1)
    return _fragment(request, "result", last=rows[0] if rows else None)


@router.get("/ui/sites/{site}/parts/devices")
def part_devices(request: Request, service: SiteDep, principal: PrincipalDep) -> HTMLResponse:
    """Devices with their last reading and its quality."""
    return _fragment(request, "devices", devices=devices_of(service, principal))


@router.get("/ui/sites/{site}/parts/settlements")
def part_settlements(
    request: Request, service: SiteDep, principal: PrincipalDep, dashboard: DashboardDep
) -> HTMLResponse:
    """Settlement state of recent intervals, with their transactions."""
    del service, principal
    rows = dashboard.recent(back=7)
    return _fragment(request, "settlements", rows=rows)


@router.get("/ui/sites/{site}/parts/alerts")
def part_alerts(
    request: Request, service: SiteDep, principal: PrincipalDep, dashboard: DashboardDep
) -> HTMLResponse:
    """The alerts now (operators and auditors; a prosumer gets none)."""
    del service
    alerts = [] if principal.role is Role.PROSUMER else dashboard.alerts()
    return _fragment(request, "alerts", alerts=alerts)


@router.get("/ui/sites/{site}/parts/records")
def part_records(
    request: Request,
    service: SiteDep,
    principal: PrincipalDep,
    dashboard: DashboardDep,
    cursor: Cursor = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 24,
) -> HTMLResponse:
    """Audit records with their anchors and verification state (op, aud)."""
    if principal.role is Role.PROSUMER:
        raise ApiError(403, "forbidden", "only an operator or an auditor may read this")
    page = audit_records(service, principal, dashboard, limit=limit, cursor=cursor)
    return _fragment(request, "records", page=page, site_id=service.site_id)


@router.get("/ui/sites/{site}/parts/governance")
def part_governance(request: Request, service: SiteDep, principal: PrincipalDep) -> HTMLResponse:
    """Members, governed values and their history, proposals with their votes.

    The same data as ``GET .../governance`` (anyone may read it); a prosumer gets vote
    buttons on the open proposals they have not voted on. 404 ``no_governance`` without.
    """
    return _fragment(
        request,
        "governance",
        gov=get_governance(service),
        me_address=principal.address,
        me_role=principal.role.value,
    )


@router.get("/ui/sites/{site}/parts/account/{participant}")
def part_account(
    request: Request, service: SiteDep, principal: PrincipalDep, participant: str
) -> HTMLResponse:
    """A participant's devices (own, op, aud)."""
    require_participant(service, principal, participant)
    devices = [d for d in devices_of(service, principal) if d.participant == participant]
    return _fragment(request, "devices", devices=devices)


def mount(app: FastAPI) -> None:
    """Add the static files, the pages and the fragments to ``app``."""
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.include_router(router)

"""The screens' HTTP routes: the kitchen display, the operator page, the login form.

    GET  /kds/{station} | /kds/all           the kitchen display (cards come over SSE)
    GET  /kds/{station}/events               the live stream (edge/web/live.py)
    POST /kds/{station}/bump    {card_id}    bump a card (JSON or form)
    POST /kds/{station}/recall               bring back the station's last bump
    GET  /                                   the operator page: one panel per section
    GET  /operator/panels/{key}              one panel, for the page's refresh
    POST /operator/{key}/{action}            a panel's action (form fields)
    GET  /operator/tickets/{job_key}.png     what a ticket looks like on paper
    GET  /login, POST /login, POST /logout   the operator session
    GET  /static/...                         the screens' own CSS and JS (no CDN, no build)

The pages are rendered on the server with Jinja2 (autoescape on for every template), and a
few hundred lines of plain JS keep them live. Every POST goes through `Guard` first
(edge/web/security.py).

The operator page is a list of panels (`edge.web.panels`): the page's own, read from the
store, and one for each section a component put on the daemon's board. A connector that is not
configured has no section, and nothing stands in for it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from aiohttp import web
from aiohttp.typedefs import Handler
from markupsafe import Markup

from edge.store.kds import Bumped
from edge.web.live import TICK_SECONDS, CardHub, CardSource, stream_cards
from edge.web.panels import ActionRefused, Panel
from edge.web.security import CSRF_FIELD, Guard, safe_next

if TYPE_CHECKING:
    from jinja2 import Environment

log = structlog.get_logger(__name__)

ALL = "all"
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


class Kitchen(Protocol):
    """Bump and recall, each one store transaction."""

    async def bump(self, card_id: str, stations: Sequence[str] | None) -> Bumped | None: ...

    async def recall(self, stations: Sequence[str] | None) -> Bumped | None: ...


TicketImage = Callable[[str], Awaitable[bytes | None]]


@dataclass
class Screens:
    site: str
    stations: Sequence[str]
    warn_minutes: float
    late_minutes: float
    source: CardSource
    hub: CardHub
    kitchen: Kitchen
    guard: Guard
    panels: Callable[[], Sequence[Panel]] = field(default=lambda: ())
    ticket_image: TicketImage | None = None
    tick: float = TICK_SECONDS


def templates() -> Environment:
    # Imported on the first page asked for: a daemon whose screens nobody opens does not
    # carry jinja2 (about 2 MB of RSS, issue 12).
    from jinja2 import Environment, PackageLoader, StrictUndefined

    env = Environment(loader=PackageLoader("edge.web", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    return env


def static_dir() -> Path:
    return Path(str(resources.files("edge.web").joinpath("static")))


@web.middleware
async def headers(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    if response.content_type == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


async def _fields(request: web.Request) -> dict[str, str]:
    """Form fields or a JSON object, as strings."""
    if request.content_type == "application/json":
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="the body is not JSON\n") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="the body must be a JSON object\n")
        return {str(k): str(v) for k, v in body.items() if v is not None}
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str)}


def _wants_json(request: web.Request) -> bool:
    return (request.content_type == "application/json"
            or "application/json" in request.headers.get("Accept", ""))


def add_screens(app: web.Application, screens: Screens) -> None:
    envs: list[Environment] = []    # made on the first page

    def env() -> Environment:
        if not envs:
            envs.append(templates())
        return envs[0]

    app.middlewares.append(headers)
    app.middlewares.append(screens.guard.middleware())
    known = set(screens.stations)

    def page(request: web.Request, template: str, status: int = 200,
             **values: Any) -> web.Response:
        session = screens.guard.session(request)
        html = env().get_template(template).render(
            site=screens.site, stations=screens.stations, here=request.path_qs,
            csrf=session.csrf if session else None, **values)
        return web.Response(text=html, status=status, content_type="text/html")

    def stations_of(request: web.Request) -> list[str] | None:
        station = request.match_info["station"]
        if station == ALL:
            return None
        if station not in known:
            raise web.HTTPNotFound(text=f"no station '{station}' (configured: "
                                        f"{', '.join(screens.stations)})\n")
        return [station]

    # -- kitchen display ------------------------------------------------------------------

    async def kds_page(request: web.Request) -> web.Response:
        chosen = stations_of(request)
        base = f"/kds/{request.match_info['station']}"
        return page(request, "kds.html",
                    title="All stations" if chosen is None else chosen[0],
                    all_stations=chosen is None, events_url=f"{base}/events",
                    bump_url=f"{base}/bump", recall_url=f"{base}/recall",
                    warn_seconds=round(screens.warn_minutes * 60, 3),
                    late_seconds=round(screens.late_minutes * 60, 3))

    async def kds_events(request: web.Request) -> web.StreamResponse:
        return await stream_cards(request, screens.source, screens.hub, stations_of(request),
                                  tick=screens.tick)

    async def kds_bump(request: web.Request) -> web.Response:
        chosen = stations_of(request)
        card_id = (await _fields(request)).get("card_id", "")
        if not card_id:
            raise web.HTTPBadRequest(text="card_id is missing\n")
        done = await screens.kitchen.bump(card_id, chosen)
        if done is None:
            raise web.HTTPConflict(text=f"card {card_id} is not open at this station "
                                        "(bumped already, or gone)\n")
        log.info("kds_bumped", job_key=done.job_key, order_id=done.order_id,
                 station=done.station_id)
        return web.json_response({"card_id": done.job_key, "order_id": done.order_id})

    async def kds_recall(request: web.Request) -> web.Response:
        done = await screens.kitchen.recall(stations_of(request))
        if done is None:
            return web.json_response({"card_id": None})
        log.info("kds_recalled", job_key=done.job_key, order_id=done.order_id,
                 station=done.station_id)
        return web.json_response({"card_id": done.job_key, "order_id": done.order_id})

    # -- operator page --------------------------------------------------------------------

    def find(key: str) -> Panel:
        for panel in screens.panels():
            if panel.key == key:
                return panel
        raise web.HTTPNotFound(text=f"no panel '{key}' on the operator page\n")

    async def render_panel(request: web.Request, panel: Panel) -> Markup:
        session = screens.guard.session(request)
        view = await panel.view()
        html = env().get_template("panel.html").render(
            title=panel.title, key=panel.key, view=view,
            csrf=session.csrf if session else None, csrf_field=CSRF_FIELD)
        return Markup(html)

    async def operator(request: web.Request) -> web.Response:
        panels = [{"key": p.key, "html": await render_panel(request, p)}
                  for p in screens.panels()]
        return page(request, "operator.html", panels=panels)

    async def partial(request: web.Request) -> web.Response:
        html = await render_panel(request, find(request.match_info["key"]))
        return web.Response(text=str(html), content_type="text/html")

    async def act(request: web.Request) -> web.Response:
        panel = find(request.match_info["key"])
        name = request.match_info["action"]
        action = panel.actions.get(name)
        if action is None:
            raise web.HTTPNotFound(text=f"panel '{panel.key}' has no action '{name}'\n")
        fields = await _fields(request)
        fields.pop(CSRF_FIELD, None)
        try:
            message = await action(fields)
        except ActionRefused as exc:
            log.info("operator_action_refused", panel=panel.key, action=name, why=str(exc))
            raise _status(exc) from None
        log.info("operator_action", panel=panel.key, action=name, result=message)
        if _wants_json(request):
            return web.json_response({"message": message})
        raise web.HTTPSeeOther(f"/#{panel.key}")

    async def ticket_png(request: web.Request) -> web.Response:
        if screens.ticket_image is None:
            raise web.HTTPNotFound(text="ticket previews are not available here\n")
        path = request.match_info["path"]
        if not path.endswith(".png"):
            raise web.HTTPNotFound(text="a ticket preview ends in .png\n")
        job_key = path.removesuffix(".png")
        image = await screens.ticket_image(job_key)
        if image is None:
            raise web.HTTPNotFound(text=f"no job {job_key}\n")
        return web.Response(body=image, content_type="image/png",
                            headers={"Cache-Control": "no-store"})

    # -- session --------------------------------------------------------------------------

    async def login_form(request: web.Request) -> web.Response:
        return page(request, "login.html", next=safe_next(request.query.get("next")),
                    message=None)

    async def login(request: web.Request) -> web.Response:
        fields = await _fields(request)
        target = safe_next(fields.get("next"))
        if screens.guard.token.get() is None:
            return page(request, "login.html", status=403, next=target,
                        message=f"Actions are off: {screens.guard.token.problem}")
        if not screens.guard.token.matches(fields.get("token", "").strip()):
            await screens.guard.wrong_token_pause()
            log.warning("operator_login_refused", peer=request.remote)
            return page(request, "login.html", status=401, next=target,
                        message="That is not the operator token.")
        response = web.HTTPSeeOther(target)
        screens.guard.set_cookie(response)
        log.info("operator_logged_in", peer=request.remote)
        raise response

    async def logout(request: web.Request) -> web.Response:
        response = web.HTTPSeeOther("/")
        screens.guard.clear_cookie(response)
        raise response

    app.add_routes([
        web.get("/", operator),
        web.get("/login", login_form),
        web.post("/login", login),
        web.post("/logout", logout),
        web.get("/operator/panels/{key}", partial),
        web.post("/operator/{key}/{action}", act),
        web.get("/operator/tickets/{path:.+}", ticket_png),
        web.get("/kds/{station}", kds_page),
        web.get("/kds/{station}/events", kds_events),
        web.post("/kds/{station}/bump", kds_bump),
        web.post("/kds/{station}/recall", kds_recall),
        web.static("/static", static_dir(), append_version=False),
    ])


def _status(exc: ActionRefused) -> web.HTTPException:
    cls: type[web.HTTPException] = {400: web.HTTPBadRequest, 404: web.HTTPNotFound}.get(
        exc.status, web.HTTPConflict)
    return cls(text=f"{exc}\n", content_type="text/plain")


__all__ = ["ALL", "Kitchen", "Screens", "TicketImage", "add_screens", "templates"]

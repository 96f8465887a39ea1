"""The small HTTP interface tests and the demo use to drive and inspect the virtual printer.

GET  /jobs[?wait=N&timeout=S]  jobs since the last reset (waits for N of them; 408 on timeout)
GET  /jobs/{seq}               one job
GET  /jobs/{seq}/raw           its bytes
GET  /jobs/{seq}/txt           its text file
GET  /jobs/{seq}/png[?timeout=S]  its rendering (waits for the worker; 404 with --no-png)
GET  /state                    {"state", "since", "held_bytes", "buffered_bytes",
                                "buffer_bytes", "reading_paused", "paused_connections",
                                "mode", "mode_settings", "armed", "power_on_at",
                                "connections", "connections_total", "jobs", "last_seq",
                                "received", "port"}
POST /state {"state": "paper_out"}   online|paper_near_end|paper_out|cover_open|error|offline,
                               now; cancels an armed change and a pending power-on
POST /state {"state": "paper_out", "after_bytes": 300}   armed: after 300 more bytes of
                               print data (or "after_cuts": 1, right after the next cut)
GET  /mode                     {"mode", "after_bytes", "bytes_per_second"}
POST /mode {"mode": "drop", "after_bytes": 100}   normal|hung|drop|slow; "after_bytes" for
                               drop, "bytes_per_second" (default 300) for slow
POST /power-cycle {"off_seconds": 2, "state": "online", "mode": {"mode": "normal"},
                   "wait": false}   off now, back on after off_seconds (state and mode
                               optional: default the state before, mode unchanged); answers
                               once off (wait=false) or once back on (wait=true)
GET  /connections[?since=T]    [{"id", "peer", "accepted_at", "closed_at", "bytes",
                                "bytes_read", "status_queries", "closed_by", "error"}]
GET  /received[?job_key=K&wait=N&timeout=S]   received tickets: [{"seq", "connection",
                                "peer", "first_byte_at", "ended_at", "open", "bytes", "cut",
                                "complete", "job_key", "fate", "held_bytes",
                                "printed_bytes", "lost_bytes", "text"}]
POST /reset                    forget the jobs, ended received tickets, closed connections

Bad input gets 400 with {"error": "...", "field": "..."} naming the field.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

from edge.virtual_printer.faults import ArmedChange, FieldError, ModeSettings
from edge.virtual_printer.server import VirtualPrinter
from edge.virtual_printer.status import PrinterState

log = structlog.get_logger(__name__)

_PRINTER: web.AppKey[VirtualPrinter] = web.AppKey("printer", VirtualPrinter)


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status, dumps=lambda o: json.dumps(o, ensure_ascii=False))


def _float(request: web.Request, name: str, default: float) -> float:
    try:
        return float(request.query.get(name, default))
    except ValueError as exc:
        raise web.HTTPBadRequest(text=f"{name} must be a number") from exc


def _seq(request: web.Request) -> int:
    try:
        return int(request.match_info["seq"])
    except ValueError as exc:
        raise web.HTTPNotFound() from exc


async def _jobs(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    want = int(_float(request, "wait", 0))
    if want:
        try:
            await printer.wait_for_jobs(want, _float(request, "timeout", 10.0))
        except TimeoutError:
            return _json({"error": "timeout", "want": want, "have": len(printer.jobs),
                          "jobs": [j.to_dict() for j in printer.jobs]}, status=408)
    return _json([job.to_dict() for job in printer.jobs])


def _job_or_404(request: web.Request) -> Any:
    job = request.app[_PRINTER].job(_seq(request))
    if job is None:
        raise web.HTTPNotFound(text="no such job")
    return job


async def _job(request: web.Request) -> web.Response:
    return _json(_job_or_404(request).to_dict())


async def _raw(request: web.Request) -> web.Response:
    return web.Response(body=_job_or_404(request).raw, content_type="application/octet-stream")


async def _txt(request: web.Request) -> web.Response:
    text = "".join(line + "\n" for line in _job_or_404(request).txt)
    return web.Response(text=text, content_type="text/plain", charset="utf-8")


async def _png(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    job = _job_or_404(request)
    if not printer.png:
        raise web.HTTPNotFound(text="PNG rendering is disabled")
    try:
        path = await printer.wait_for_png(job.seq, _float(request, "timeout", 10.0))
    except TimeoutError:
        return _json({"error": "timeout"}, status=408)
    return web.Response(body=path.read_bytes(), content_type="image/png")


async def _get_state(request: web.Request) -> web.Response:
    return _json(request.app[_PRINTER].state_info())


def _bad(field: str, message: str) -> web.Response:
    return _json({"error": f"{field}: {message}", "field": field}, status=400)


async def _body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(
            text=json.dumps({"error": "body: must be a JSON object", "field": "body"}),
            content_type="application/json",
        )
    return body


def _state_of(body: dict[str, Any], field: str = "state") -> PrinterState:
    try:
        return PrinterState(str(body.get(field)))
    except ValueError:
        choices = ", ".join(s.value for s in PrinterState)
        raise FieldError(field, f"must be one of {choices}, got {body.get(field)!r}") from None


async def _set_state(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    body = await _body(request)
    try:
        state = _state_of(body)
        armed = ArmedChange.parse(state, body)
    except FieldError as exc:
        return _bad(exc.field, exc.message)
    if armed is None:
        await printer.set_state(state)
    else:
        printer.arm_state(state, after_bytes=armed.after_bytes, after_cuts=armed.after_cuts)
    return _json(printer.state_info())


async def _get_mode(request: web.Request) -> web.Response:
    return _json(request.app[_PRINTER].mode.to_dict())


async def _set_mode(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    try:
        settings = ModeSettings.parse(await _body(request))
    except FieldError as exc:
        return _bad(exc.field, exc.message)
    printer.set_mode(settings)
    return _json(printer.mode.to_dict())


async def _power_cycle(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    body = await _body(request)
    off = body.get("off_seconds", 2.0)
    if isinstance(off, bool) or not isinstance(off, int | float) or not 0 <= off <= 3600:
        return _bad("off_seconds", f"must be a number of seconds from 0 to 3600, got {off!r}")
    try:
        state = _state_of(body) if body.get("state") is not None else None
        if state is PrinterState.OFFLINE:
            raise FieldError("state", "must be a powered state (the printer comes back on)")
        mode = body.get("mode")
        if mode is not None and not isinstance(mode, dict):
            raise FieldError("mode", 'must be an object like {"mode": "normal"}')
        settings = ModeSettings.parse(mode) if mode is not None else None
    except FieldError as exc:
        return _bad(exc.field, exc.message)
    wait = bool(body.get("wait", False))
    await printer.power_cycle(float(off), state=state, mode=settings, wait=wait)
    return _json(printer.state_info())


async def _connections(request: web.Request) -> web.Response:
    since = request.query.get("since")
    printer = request.app[_PRINTER]
    records = printer.connections(_float(request, "since", 0.0) if since else None)
    return _json([record.to_dict() for record in records])


async def _received(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    want = int(_float(request, "wait", 0))
    job_key = request.query.get("job_key")
    if want:
        try:
            await printer.wait_for_received(want, _float(request, "timeout", 10.0))
        except TimeoutError:
            return _json({"error": "timeout", "want": want,
                          "have": sum(1 for t in printer.received if not t.open),
                          "received": [t.to_dict() for t in printer.received]}, status=408)
    tickets = [t.to_dict() for t in printer.received]
    if job_key is not None:
        tickets = [t for t in tickets if t["job_key"] == job_key]
    return _json(tickets)


async def _reset(request: web.Request) -> web.Response:
    request.app[_PRINTER].reset()
    return _json({"ok": True})


def make_app(printer: VirtualPrinter) -> web.Application:
    app = web.Application()
    app[_PRINTER] = printer
    app.router.add_get("/jobs", _jobs)
    app.router.add_get("/jobs/{seq}", _job)
    app.router.add_get("/jobs/{seq}/raw", _raw)
    app.router.add_get("/jobs/{seq}/txt", _txt)
    app.router.add_get("/jobs/{seq}/png", _png)
    app.router.add_get("/state", _get_state)
    app.router.add_post("/state", _set_state)
    app.router.add_get("/mode", _get_mode)
    app.router.add_post("/mode", _set_mode)
    app.router.add_post("/power-cycle", _power_cycle)
    app.router.add_get("/connections", _connections)
    app.router.add_get("/received", _received)
    app.router.add_post("/reset", _reset)
    return app


class ControlServer:
    def __init__(self, printer: VirtualPrinter, host: str = "127.0.0.1", port: int = 0) -> None:
        self._printer = printer
        self.host = host
        self._port = port
        self._runner: web.AppRunner | None = None

    @property
    def port(self) -> int:
        return self._port

    async def start(self) -> None:
        self._runner = web.AppRunner(make_app(self._printer), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self._port = int(addresses[0][1])
        log.info("control_started", host=self.host, port=self._port)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

"""The small HTTP interface tests and the demo use to drive and inspect the virtual printer.

GET  /jobs[?wait=N&timeout=S]  jobs since the last reset (waits for N of them; 408 on timeout)
GET  /jobs/{seq}               one job
GET  /jobs/{seq}/raw           its bytes
GET  /jobs/{seq}/txt           its text file
GET  /jobs/{seq}/png[?timeout=S]  its rendering (waits for the worker; 404 with --no-png)
GET  /state                    {"state", "since", "held_bytes", "connections", ...}
POST /state {"state": "paper_out"}   online|paper_near_end|paper_out|cover_open|error|offline
POST /reset                    forget the jobs
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web

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


async def _set_state(request: web.Request) -> web.Response:
    printer = request.app[_PRINTER]
    try:
        body = await request.json()
        state = PrinterState(body["state"])
    except (ValueError, KeyError, TypeError):
        choices = ", ".join(s.value for s in PrinterState)
        return _json({"error": f"body must be {{\"state\": one of {choices}}}"}, status=400)
    await printer.set_state(state)
    return _json(printer.state_info())


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

"""A virtual printer the test owns: a real subprocess, started and stopped by its pid.

    with VPrinterProc(tmp_path / "printer").start() as printer:
        ... point kitchen-edge at printer.address (tcp://127.0.0.1:PORT) ...
        jobs = printer.wait_jobs(1)            # or: await printer.await_jobs(1)
        assert jobs[0]["txt"][0] == "{2x2 b center} NEW"
        printer.set_state("paper_out")         # or: await printer.aset_state("paper_out")

Each job is the dict of GET /jobs: seq, peer, first_byte_at, completed_at, cut, job_key,
bytes, text (plain lines), txt (lines with style marks, as in NNNN.txt), lines (structured),
paths {bin, txt, png}. The process's output (JSON log lines) goes to OUT/vprinter.log.

Making it unkind (each has an `a...` async twin):

    printer = VPrinterProc(out, buffer_bytes=4096, mode="slow", bytes_per_second=300)
    printer.set_state("paper_out", after_bytes=300)   # paper runs out mid-ticket
    printer.set_state("paper_out", after_cuts=1)      # ... right after the next ticket
    printer.set_mode("drop", after_bytes=100)         # or "hung", "slow", "normal"
    printer.power_cycle(2.0, wait=True)               # buffer lost, connections refused
    printer.connections(since=t)                      # [{id, peer, accepted_at, closed_at,
                                                      #   bytes, closed_by, ...}]
    printer.received(job_key="qr-1:new:grill")        # how often a ticket entered it
    printer.received_job_keys()                       # {job_key: times received}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

# The lead may switch this to [sys.executable, "-m", "edge", "virtual-printer"].
COMMAND: list[str] = [sys.executable, "-m", "edge.virtual_printer"]


class VPrinterProc:
    def __init__(
        self,
        out_dir: Path,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        profile: str | None = None,
        png: bool = True,
        buffer_bytes: int | None = None,
        mode: str | None = None,
        drop_after_bytes: int | None = None,
        bytes_per_second: int | None = None,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.host = host
        self.port = port
        self.control_port = 0
        self.profile = profile
        self.png = png
        self.extra_args = list(extra_args)
        # Flags for how unkind the printer starts; None keeps the printer's defaults.
        flags = {"--buffer-bytes": buffer_bytes, "--mode": mode,
                 "--drop-after-bytes": drop_after_bytes, "--bytes-per-second": bytes_per_second}
        for flag, value in flags.items():
            if value is not None:
                self.extra_args += [flag, str(value)]
        self.proc: subprocess.Popen[bytes] | None = None
        self.output: list[str] = []
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    # -- process -------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    @property
    def address(self) -> str:
        """The printer's connection string for a kitchen-edge config."""
        return f"tcp://{self.host}:{self.port}"

    @property
    def control_url(self) -> str:
        return f"http://127.0.0.1:{self.control_port}"

    def start(self, timeout: float = 20.0) -> VPrinterProc:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        args = [*COMMAND, "--host", self.host, "--port", str(self.port),
                "--out", str(self.out_dir), "--control-port", "0"]
        if self.profile:
            args += ["--profile", self.profile]
        if not self.png:
            args.append("--no-png")
        args += self.extra_args
        self._ready.clear()
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self._reader = threading.Thread(target=self._read_output, args=(self.proc,),
                                        daemon=True)
        self._reader.start()
        if not self._ready.wait(timeout) or self.proc.poll() is not None:
            self.stop(signal.SIGKILL)
            tail = "\n".join(self.output[-20:])
            raise RuntimeError(f"virtual printer did not start: {args}\n{tail}")
        return self

    def _read_output(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        with (self.out_dir / "vprinter.log").open("a", encoding="utf-8") as log:
            for raw in proc.stdout:
                line = raw.decode("utf-8", "replace").rstrip("\n")
                self.output.append(line)
                log.write(line + "\n")
                log.flush()
                if not self._ready.is_set() and line.startswith("{"):
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue
                    if event.get("event") == "listening":
                        self.port = int(event["port"])
                        self.control_port = int(event["control_port"])
                        self._ready.set()
        self._ready.set()  # the process ended: let start() see it

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int | None:
        """Stop the process (by pid) and return its exit code."""
        proc, self.proc = self.proc, None
        if proc is None:
            return None
        if proc.poll() is None:
            os.kill(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()
        if self._reader is not None:
            self._reader.join(timeout=5)
        return proc.returncode

    def restart(self, timeout: float = 20.0) -> VPrinterProc:
        """Stop and start again on the same port (a power cycle that loses everything)."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> VPrinterProc:
        if self.proc is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- control, sync -------------------------------------------------------------------

    def _get(
        self, path: str, params: dict[str, Any] | None = None, timeout: float = 10.0
    ) -> httpx.Response:
        return httpx.get(self.control_url + path, params=params, timeout=timeout)

    def _post(self, path: str, body: dict[str, Any], timeout: float = 10.0) -> Any:
        response = httpx.post(self.control_url + path, json=body, timeout=timeout)
        return _ok(response).json()

    def state(self) -> dict[str, Any]:
        return dict(self._get("/state").raise_for_status().json())

    def set_state(
        self, state: str, *, after_bytes: int | None = None, after_cuts: int | None = None
    ) -> dict[str, Any]:
        """Now, or armed: after `after_bytes` more bytes of print data or `after_cuts` cuts."""
        return dict(self._post("/state", _state_body(state, after_bytes, after_cuts)))

    def mode(self) -> dict[str, Any]:
        return dict(self._get("/mode").raise_for_status().json())

    def set_mode(
        self, mode: str, *, after_bytes: int | None = None, bytes_per_second: int | None = None
    ) -> dict[str, Any]:
        return dict(self._post("/mode", _mode_body(mode, after_bytes, bytes_per_second)))

    def power_cycle(
        self,
        off_seconds: float = 2.0,
        *,
        state: str | None = None,
        mode: str | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        """Off now (returns then), back on after off_seconds (returns then with wait=True)."""
        body = _power_body(off_seconds, state, mode, wait)
        return dict(self._post("/power-cycle", body, timeout=off_seconds + 10))

    def connections(self, since: float | None = None) -> list[dict[str, Any]]:
        params = {"since": since} if since is not None else None
        return list(self._get("/connections", params).raise_for_status().json())

    def received(self, job_key: str | None = None) -> list[dict[str, Any]]:
        """Received tickets (or those with this job key), each time one entered the printer."""
        params = {"job_key": job_key} if job_key is not None else None
        return list(self._get("/received", params).raise_for_status().json())

    def wait_received(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until n received tickets have ended (at their cut or their connection's end)."""
        response = self._get("/received", {"wait": n, "timeout": timeout}, timeout=timeout + 5)
        return _listed_or_timeout(response, n, "received", "received tickets")

    def received_job_keys(self) -> dict[str, int]:
        """How many times each job key entered the printer (printed, held or lost)."""
        return _count_keys(self.received())

    def jobs(self) -> list[dict[str, Any]]:
        return list(self._get("/jobs").raise_for_status().json())

    def wait_jobs(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        response = self._get("/jobs", {"wait": n, "timeout": timeout}, timeout=timeout + 5)
        return _jobs_or_timeout(response, n)

    def job_raw(self, seq: int) -> bytes:
        return self._get(f"/jobs/{seq}/raw").raise_for_status().content

    def job_png(self, seq: int, timeout: float = 10.0) -> bytes:
        response = self._get(f"/jobs/{seq}/png", {"timeout": timeout}, timeout=timeout + 5)
        return response.raise_for_status().content

    def reset(self) -> None:
        httpx.post(self.control_url + "/reset", timeout=10).raise_for_status()

    # -- control, async ------------------------------------------------------------------

    async def astate(self) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.control_url, timeout=10) as client:
            return dict((await client.get("/state")).raise_for_status().json())

    async def _apost(self, path: str, body: dict[str, Any], http_timeout: float = 10.0) -> Any:
        async with httpx.AsyncClient(base_url=self.control_url, timeout=http_timeout) as client:
            return _ok(await client.post(path, json=body)).json()

    async def _aget(self, path: str, params: dict[str, Any] | None = None) -> Any:
        async with httpx.AsyncClient(base_url=self.control_url, timeout=10) as client:
            return (await client.get(path, params=params)).raise_for_status().json()

    async def aset_state(
        self, state: str, *, after_bytes: int | None = None, after_cuts: int | None = None
    ) -> dict[str, Any]:
        return dict(await self._apost("/state", _state_body(state, after_bytes, after_cuts)))

    async def amode(self) -> dict[str, Any]:
        return dict(await self._aget("/mode"))

    async def aset_mode(
        self, mode: str, *, after_bytes: int | None = None, bytes_per_second: int | None = None
    ) -> dict[str, Any]:
        return dict(await self._apost("/mode", _mode_body(mode, after_bytes, bytes_per_second)))

    async def apower_cycle(
        self,
        off_seconds: float = 2.0,
        *,
        state: str | None = None,
        mode: str | None = None,
        wait: bool = False,
    ) -> dict[str, Any]:
        body = _power_body(off_seconds, state, mode, wait)
        return dict(await self._apost("/power-cycle", body, http_timeout=off_seconds + 10))

    async def aconnections(self, since: float | None = None) -> list[dict[str, Any]]:
        return list(await self._aget("/connections",
                                     {"since": since} if since is not None else None))

    async def areceived(self, job_key: str | None = None) -> list[dict[str, Any]]:
        return list(await self._aget("/received",
                                     {"job_key": job_key} if job_key is not None else None))

    # The timeout is the server's long-poll limit, not a client-side wait.
    async def await_received(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        async with httpx.AsyncClient(base_url=self.control_url, timeout=timeout + 5) as client:
            response = await client.get("/received", params={"wait": n, "timeout": timeout})
            return _listed_or_timeout(response, n, "received", "received tickets")

    async def areceived_job_keys(self) -> dict[str, int]:
        return _count_keys(await self.areceived())

    async def ajobs(self) -> list[dict[str, Any]]:
        async with httpx.AsyncClient(base_url=self.control_url, timeout=10) as client:
            return list((await client.get("/jobs")).raise_for_status().json())

    # The timeout is the server's long-poll limit, not a client-side wait.
    async def await_jobs(self, n: int, timeout: float = 10.0) -> list[dict[str, Any]]:  # noqa: ASYNC109
        async with httpx.AsyncClient(base_url=self.control_url, timeout=timeout + 5) as client:
            response = await client.get("/jobs", params={"wait": n, "timeout": timeout})
            return _jobs_or_timeout(response, n)

    async def areset(self) -> None:
        async with httpx.AsyncClient(base_url=self.control_url, timeout=10) as client:
            (await client.post("/reset")).raise_for_status()


def _jobs_or_timeout(response: httpx.Response, n: int) -> list[dict[str, Any]]:
    return _listed_or_timeout(response, n, "jobs", "jobs")


def _listed_or_timeout(
    response: httpx.Response, n: int, key: str, what: str
) -> list[dict[str, Any]]:
    if response.status_code == 408:
        body = response.json()
        lines = [item.get("txt", item.get("text")) for item in body.get(key, [])]
        raise TimeoutError(f"virtual printer has {body.get('have')} {what}, wanted {n}: {lines}")
    return list(response.raise_for_status().json())


def _ok(response: httpx.Response) -> httpx.Response:
    """raise_for_status, with the printer's own error (it names the field) in the message."""
    if response.status_code == 400:
        raise ValueError(f"virtual printer refused {response.request.url.path}: "
                         f"{response.text}")
    return response.raise_for_status()


def _state_body(state: str, after_bytes: int | None, after_cuts: int | None) -> dict[str, Any]:
    body: dict[str, Any] = {"state": state}
    if after_bytes is not None:
        body["after_bytes"] = after_bytes
    if after_cuts is not None:
        body["after_cuts"] = after_cuts
    return body


def _mode_body(
    mode: str, after_bytes: int | None, bytes_per_second: int | None
) -> dict[str, Any]:
    body: dict[str, Any] = {"mode": mode}
    if after_bytes is not None:
        body["after_bytes"] = after_bytes
    if bytes_per_second is not None:
        body["bytes_per_second"] = bytes_per_second
    return body


def _power_body(
    off_seconds: float, state: str | None, mode: str | None, wait: bool
) -> dict[str, Any]:
    body: dict[str, Any] = {"off_seconds": off_seconds, "wait": wait}
    if state is not None:
        body["state"] = state
    if mode is not None:
        body["mode"] = {"mode": mode}
    return body


def _count_keys(tickets: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for ticket in tickets:
        key = ticket.get("job_key")
        if key:
            counts[key] = counts.get(key, 0) + 1
    return counts

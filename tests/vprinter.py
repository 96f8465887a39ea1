"""A virtual printer the test owns: a real subprocess, started and stopped by its pid.

    with VPrinterProc(tmp_path / "printer").start() as printer:
        ... point kitchen-edge at printer.address (tcp://127.0.0.1:PORT) ...
        jobs = printer.wait_jobs(1)            # or: await printer.await_jobs(1)
        assert jobs[0]["txt"][0] == "{2x2 b center} NEW"
        printer.set_state("paper_out")         # or: await printer.aset_state("paper_out")

Each job is the dict of GET /jobs: seq, peer, first_byte_at, completed_at, cut, bytes,
text (plain lines), txt (lines with style marks, as in NNNN.txt), lines (structured),
paths {bin, txt, png}. The process's output (JSON log lines) goes to OUT/vprinter.log.
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
        extra_args: Sequence[str] = (),
    ) -> None:
        self.out_dir = Path(out_dir)
        self.host = host
        self.port = port
        self.control_port = 0
        self.profile = profile
        self.png = png
        self.extra_args = list(extra_args)
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
        self, path: str, params: dict[str, float] | None = None, timeout: float = 10.0
    ) -> httpx.Response:
        return httpx.get(self.control_url + path, params=params, timeout=timeout)

    def state(self) -> dict[str, Any]:
        return dict(self._get("/state").raise_for_status().json())

    def set_state(self, state: str) -> dict[str, Any]:
        response = httpx.post(self.control_url + "/state", json={"state": state}, timeout=10)
        return dict(response.raise_for_status().json())

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

    async def aset_state(self, state: str) -> dict[str, Any]:
        async with httpx.AsyncClient(base_url=self.control_url, timeout=10) as client:
            response = await client.post("/state", json={"state": state})
            return dict(response.raise_for_status().json())

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
    if response.status_code == 408:
        body = response.json()
        raise TimeoutError(f"virtual printer has {body.get('have')} jobs, wanted {n}: "
                           f"{[job.get('txt') for job in body.get('jobs', [])]}")
    return list(response.raise_for_status().json())

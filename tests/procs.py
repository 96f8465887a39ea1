"""Processes a test starts: stopped by their own pid, and the project's fake servers
(`python -m edge.upstream.fake`, `...marketplace.fake`, `...aggregator.fake_platform serve`)
run as separate processes, so a test can cut or slow them from outside while the daemon
runs in its own process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self

REPO = Path(__file__).resolve().parent.parent


def stop_by_pid(proc: subprocess.Popen[bytes], timeout: float = 10.0) -> int:
    """SIGTERM (so the process can say goodbye: Last Will, mDNS withdrawals, a saved broker
    database), SIGKILL only if it hangs; its exit code. Only ever a process the test started."""
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()
    return proc.returncode


@dataclass
class FakeServerProcess:
    """One of the fakes in its own process. It prints one JSON line once it listens (its
    `port`, `control_port` and, for some, `url`); faults are set through the control port."""

    module: ClassVar[tuple[str, ...]]
    token_name: ClassVar[str]
    extra_args: ClassVar[tuple[str, ...]] = ()

    workdir: Path
    token: str = "test-token"
    port: int = 0
    control_port: int = 0
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def token_file(self) -> Path:
        return self.workdir / self.token_name

    def start(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n")
        self.token_file.chmod(0o600)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", *self.module, "--port", str(self.port),
             "--token-file", str(self.token_file), *self.extra_args],
            stdout=subprocess.PIPE, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.stop()
            raise RuntimeError(f"{' '.join(self.module)} exited before it was listening")
        info = json.loads(line)
        self.port, self.control_port = int(info["port"]), int(info["control_port"])
        self.url = str(info.get("url") or f"http://127.0.0.1:{self.port}")
        return self

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the control port; an error answer raises urllib.error.HTTPError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """The modes are in each fake's docstring (none, down, slow, 429, 500, blackhole...)."""
        result: dict[str, Any] = self.control("POST", "/fault", {"mode": mode, **options})
        return result

    def stop(self) -> int | None:
        """Stop it by its pid; its exit code (None when it was not running)."""
        if self.proc is None:
            return None
        code = stop_by_pid(self.proc)
        self.proc = None
        return code

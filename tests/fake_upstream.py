"""The fake upstream as a separate process (`python -m edge.upstream.fake`), for end-to-end
tests that run the daemon in its own process and want to cut its WAN from outside."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.broker import free_port


@dataclass
class FakeUpstreamProcess:
    workdir: Path
    token: str = "test-token"
    port: int = field(default_factory=free_port)
    control_port: int = 0
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def token_file(self) -> Path:
        return self.workdir / "upstream.token"

    def start(self, timeout: float = 15.0) -> FakeUpstreamProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.upstream.fake", "--port", str(self.port),
             "--token-file", str(self.token_file)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the process prints one JSON line once listening
        if not line:
            self.stop()
            raise RuntimeError("fake upstream exited before it was listening")
        info = json.loads(line)
        self.port, self.control_port = int(info["port"]), int(info["control_port"])
        return self

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """mode: none, down, 500, 429, slow, blackhole, reject, partial (see edge.upstream.fake)."""
        result: dict[str, Any] = self._call("POST", "/fault", {"mode": mode, **options})
        return result

    def records(self) -> list[dict[str, Any]]:
        """Every record the upstream accepted, as the daemon sent it."""
        result: list[dict[str, Any]] = self._call("GET", "/records")["records"]
        return result

    def state(self, *, ids: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/state?ids=1" if ids else "/state")
        return result

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

"""The fake marketplace as a separate process (`python -m edge.connectors.marketplace.fake`),
for end-to-end tests that run the daemon in its own process and drive the marketplace from
outside through its control port."""

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
class FakeMarketplaceProcess:
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
        return self.workdir / "marketplace.token"

    def start(self) -> FakeMarketplaceProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.token_file.write_text(self.token + "\n")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge.connectors.marketplace.fake", "--port", str(self.port),
             "--token-file", str(self.token_file)],
            stdout=subprocess.PIPE,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # the process prints one JSON line once listening
        if not line:
            self.stop()
            raise RuntimeError("fake marketplace exited before it was listening")
        info = json.loads(line)
        self.port, self.control_port = int(info["port"]), int(info["control_port"])
        return self

    def control(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        """Call the control port; an error answer raises urllib.error.HTTPError."""
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.control_port}{path}", data=data, method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.loads(response.read())

    def new_order(self, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control("POST", "/orders/build", options)
        return result

    def set_status(self, payment_key: str, status_id: int, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "POST", f"/orders/{payment_key}/status", {"status_id": status_id, **options})
        return result

    def set_fault(self, mode: str, **options: Any) -> dict[str, Any]:
        """mode: none, down, slow, 429, 500, html, blackhole, reject (see the fake's doc)."""
        result: dict[str, Any] = self.control("POST", "/fault", {"mode": mode, **options})
        return result

    def orders(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/orders")["data"]
        return result

    def requests(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.control("GET", "/requests")["data"]
        return result

    def stop(self) -> int | None:
        """Stop it by its pid; its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        code = self.proc.returncode
        self.proc = None
        return code


"""edge.service.sdnotify against a notification socket the test owns, the way systemd reads it.

The watchdog test runs a small asyncio program in a subprocess with NOTIFY_SOCKET and
WATCHDOG_USEC set, then has that program block its own event loop with time.sleep: the pings
must stop for exactly that stretch and come back afterwards.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.service.sdnotify import Notifier

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Received:
    at: float
    fields: dict[str, str]


@dataclass
class NotifySocket:
    """A bound AF_UNIX datagram socket, read by a thread like systemd's notify handler."""

    address: str | bytes
    sock: socket.socket = field(init=False)
    got: list[Received] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.address)
        self.sock.settimeout(0.1)

    @property
    def env_value(self) -> str:
        if isinstance(self.address, bytes):
            return "@" + self.address[1:].decode()
        return self.address

    def start(self) -> NotifySocket:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._stop = False
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            with self._cond:
                self.got.append(Received(time.monotonic(), fields))
                self._cond.notify_all()

    def wait_for(self, key: str, value: str | None = None, timeout: float = 10.0) -> Received:
        def match() -> Received | None:
            for r in self.got:
                if key in r.fields and (value is None or r.fields[key] == value):
                    return r
            return None

        with self._cond:
            assert self._cond.wait_for(lambda: match() is not None, timeout), (
                f"no {key}={value} in {[r.fields for r in self.got]}"
            )
            found = match()
            assert found is not None
            return found

    def close(self) -> None:
        self._stop = True
        if self._thread is not None:
            self._thread.join(timeout=2)
        self.sock.close()


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[NotifySocket]:
    ns = NotifySocket(str(tmp_path / "notify.sock")).start()
    yield ns
    ns.close()


@pytest.fixture
def abstract_socket() -> Iterator[NotifySocket]:
    ns = NotifySocket(b"\0kitchen-edge-test-" + uuid.uuid4().hex.encode()).start()
    yield ns
    ns.close()


# The "daemon": READY, a watchdog task with a changing status, a one-second stall of the
# event loop between two markers, then STOPPING. X_MARK is an extra variable systemd ignores.
PROGRAM = r"""
import asyncio, time
from edge.service.sdnotify import Notifier

async def main() -> None:
    n = Notifier()
    queued = [3]
    n.ready("starting")
    dog = asyncio.create_task(n.run_watchdog(
        lambda: f"printers up 2/2, queued jobs {queued[0]}, outbox backlog 0"))
    await asyncio.sleep(0.6)
    n.notify(f"X_MARK=block-start\nX_AT={time.monotonic()}")
    time.sleep(1.0)          # the event loop is stuck: no coroutine runs
    n.notify(f"X_MARK=block-end\nX_AT={time.monotonic()}")
    queued[0] = 0
    await asyncio.sleep(0.6)
    dog.cancel()
    n.stopping()

asyncio.run(main())
"""


def _run_program(ns: NotifySocket, extra_env: dict[str, str]) -> None:
    env = {**os.environ, "NOTIFY_SOCKET": ns.env_value, "PYTHONPATH": str(REPO), **extra_env}
    proc = subprocess.run(
        [sys.executable, "-c", PROGRAM], env=env, capture_output=True, timeout=30
    )
    assert proc.returncode == 0, proc.stderr.decode()


def test_watchdog_pings_stop_while_the_event_loop_is_blocked(notify_socket: NotifySocket) -> None:
    # 0.2 s watchdog: a ping every 0.1 s, so the 1 s stall would hide about ten of them.
    _run_program(notify_socket, {"WATCHDOG_USEC": "200000"})
    notify_socket.wait_for("STOPPING", "1")
    got = [r.fields for r in notify_socket.got]

    assert got[0] == {"READY": "1", "STATUS": "starting"}
    assert got[-1] == {"STOPPING": "1"}
    start = next(i for i, f in enumerate(got) if f.get("X_MARK") == "block-start")
    end = next(i for i, f in enumerate(got) if f.get("X_MARK") == "block-end")
    before, during, after = got[1:start], got[start + 1 : end], got[end + 1 : -1]

    assert during == [], "the blocked event loop must not ping"
    assert sum("WATCHDOG" in f for f in before) >= 3
    assert sum("WATCHDOG" in f for f in after) >= 3
    assert all(f.get("WATCHDOG") == "1" for f in before + after)
    # The stall spanned ten ping intervals (the program's own clock, not the reader's).
    assert float(got[end]["X_AT"]) - float(got[start]["X_AT"]) >= 1.0

    # STATUS rides along only when it changed: once at the start, once after the stall.
    statuses = [f["STATUS"] for f in before + after if "STATUS" in f]
    assert statuses == [
        "printers up 2/2, queued jobs 3, outbox backlog 0",
        "printers up 2/2, queued jobs 0, outbox backlog 0",
    ]


def test_watchdog_for_another_pid_is_not_pinged(notify_socket: NotifySocket) -> None:
    # WATCHDOG_PID names the process systemd watches; a child that inherits it must stay quiet.
    _run_program(notify_socket, {"WATCHDOG_USEC": "200000", "WATCHDOG_PID": "1"})
    notify_socket.wait_for("STOPPING", "1")
    got = [r.fields for r in notify_socket.got]
    assert not any("WATCHDOG" in f for f in got)
    # Without a watchdog the status is still set (at ready) and the program still stops.
    assert got[0] == {"READY": "1", "STATUS": "starting"}


def test_abstract_namespace_socket(
    abstract_socket: NotifySocket, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", abstract_socket.env_value)
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    n = Notifier()
    assert n.enabled
    assert n.watchdog_interval() == 15.0
    n.ready()
    n.status("printers up 1/2,\nqueued jobs 4")
    n.watchdog()
    n.reloading()
    n.stopping()
    abstract_socket.wait_for("STOPPING", "1")
    got = [r.fields for r in abstract_socket.got]
    assert got[0] == {"READY": "1"}
    assert got[1] == {"STATUS": "printers up 1/2, queued jobs 4"}
    assert got[2] == {"WATCHDOG": "1"}
    assert got[3]["RELOADING"] == "1"
    usec = int(got[3]["MONOTONIC_USEC"])
    assert abs(usec - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 10_000_000
    n.close()


async def test_without_notify_socket_everything_is_a_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    monkeypatch.setenv("WATCHDOG_USEC", "1000")
    n = Notifier()
    assert not n.enabled
    assert n.watchdog_interval() is None
    assert n.notify("READY=1") is False
    n.ready("x")
    n.stopping()
    # Returns at once instead of looping: there is nobody to ping.
    await n.run_watchdog(lambda: "status")


def test_a_missing_socket_never_raises(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "gone.sock"))
    assert n.enabled
    assert n.notify("WATCHDOG=1") is False
    n.ready("still running")
    n.close()

"""Run kitchen-edge as the real process it is in production, and talk to it like the POS."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import yaml
from paho.mqtt.enums import CallbackAPIVersion

SITE = "test-site"
ROOT = f"kitchen/{SITE}"


def write_config(path: Path, *, broker_port: int, printers: list[dict[str, Any]] | None = None,
                 stations: list[dict[str, Any]] | None = None, **extra: Any) -> Path:
    cfg: dict[str, Any] = {
        "site": SITE,
        "state_dir": str(path.parent / "state"),
        "mqtt": {"url": f"mqtt://127.0.0.1:{broker_port}", "client_id": f"edge-{SITE}",
                 **extra.pop("mqtt", {})},
        "printers": printers if printers is not None else [
            # Nothing listens here: jobs stay queued, which ingest tests do not care about.
            {"id": "hot", "connection": "tcp://127.0.0.1:9"}],
        "stations": stations if stations is not None else [
            {"id": "grill", "printer": "hot", "categories": ["grill"]}],
        "routing": {"default_station": (stations or [{"id": "grill"}])[0]["id"]},
        **extra,
    }
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def event(order_id: str, kind: str, data: dict[str, Any], *, event_id: str | None = None,
          channel: str = "pos") -> dict[str, Any]:
    return {
        "event_id": event_id or f"evt-{order_id}-{kind.split('.')[-1]}",
        "type": kind,
        "order_id": order_id,
        "occurred_at": "2026-11-21T18:02:11Z",
        "source": {"channel": channel, "device": "test-pos"},
        "data": data,
    }


def created(order_id: str, items: list[dict[str, Any]] | None = None, *,
            event_id: str | None = None, channel: str = "pos", **data: Any) -> dict[str, Any]:
    body = {"fulfillment": {"type": "dine_in", "table": "7"},
            "items": items or [{"line_id": "l1", "name": "Adana kebap", "qty": 2,
                                "category": "grill"}], **data}
    return event(order_id, "order.created", body, event_id=event_id, channel=channel)


@dataclass
class DaemonProc:
    config: Path
    proc: subprocess.Popen[bytes] | None = None
    lines: list[dict[str, Any]] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    _reader: threading.Thread | None = None

    @property
    def db(self) -> Path:
        cfg = yaml.safe_load(self.config.read_text())
        return Path(cfg["state_dir"]) / "kitchen-edge.db"

    def start(self, *, wait_ready: bool = True, timeout: float = 20.0) -> DaemonProc:
        self.lines = []
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
        )
        self._reader = threading.Thread(target=self._read, args=(self.proc,), daemon=True)
        self._reader.start()
        if wait_ready:
            self.wait_log("daemon_ready", timeout=timeout)
        return self

    def _read(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            try:
                self.lines.append(json.loads(raw))
            except ValueError:
                self.lines.append({"event": "raw", "text": raw.decode(errors="replace")})

    def wait_log(self, name: str, timeout: float = 20.0,
                 where: Callable[[dict[str, Any]], bool] = lambda _: True) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if line.get("event") == name and where(line):
                    return line
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.02)
        raise TimeoutError(f"no '{name}' log line in {timeout}s: {self.tail()}")

    def tail(self, n: int = 15) -> str:
        return "\n".join(json.dumps(line) for line in self.lines[-n:])

    def stop(self, timeout: float = 20.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        self.proc = None
        return code

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None

    def query(self, sql: str, args: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            conn.execute("PRAGMA busy_timeout=5000")
            return conn.execute(sql, tuple(args)).fetchall()
        finally:
            conn.close()

    def scalar(self, sql: str, args: Iterable[Any] = ()) -> Any:
        return self.query(sql, args)[0][0]

    def wait_until(self, check: Callable[[], bool], timeout: float = 20.0,
                   what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if check():
                    return
            except sqlite3.OperationalError:
                pass
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode}: {self.tail()}")
            time.sleep(0.05)
        raise TimeoutError(f"{what} not reached in {timeout}s: {self.tail()}")


class Publisher:
    """A POS-like publisher: QoS 1, waits for the broker's PUBACK of every message."""

    def __init__(self, port: int, client_id: str = "test-pos") -> None:
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=paho.MQTTv5)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def send(self, topic: str, payload: bytes | str | dict[str, Any], *, qos: int = 1,
             wait: bool = True) -> paho.MQTTMessageInfo:
        if isinstance(payload, dict):
            payload = json.dumps(payload)
        info = self.client.publish(topic, payload, qos=qos)
        if wait:
            info.wait_for_publish(timeout=10)
        return info

    def order(self, body: dict[str, Any], *, wait: bool = True) -> paho.MQTTMessageInfo:
        return self.send(f"{ROOT}/orders/{body['order_id']}/events", body, wait=wait)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Listener:
    """Subscribes and keeps what it receives (retained messages included)."""

    def __init__(self, port: int, topic: str) -> None:
        self.messages: list[tuple[str, dict[str, Any] | str, bool]] = []
        self.client = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *_: c.subscribe(topic, qos=1)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()

    def _on_message(self, _c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        try:
            body: Any = json.loads(msg.payload)
        except ValueError:
            body = msg.payload.decode(errors="replace")
        self.messages.append((msg.topic, body, bool(msg.retain)))

    def wait_for(self, check: Callable[[str, Any], bool], timeout: float = 10.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for topic, body, _ in list(self.messages):
                if check(topic, body):
                    return body
            time.sleep(0.02)
        raise TimeoutError(f"no matching message in {timeout}s; got {self.messages[-5:]}")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

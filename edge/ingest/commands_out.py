"""Sending one operator command to the running daemon through the broker, as the CLI does.

The daemon is the only writer that applies things (its reactions, the partners' calls, the
screens' live updates all run in it), so `kitchen-edge orders accept` and friends do not
write the database themselves: they publish on `{root}/commands/{name}`, QoS 1, exactly as
a POS or the operator's tablet would, and then read the database (read-only) for what became
of it. Their own client id, never the daemon's: the broker would end the daemon's session.
"""

from __future__ import annotations

import json
import os
import ssl
import threading
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from edge.config.models import Config


class NotSent(Exception):
    """The broker did not take the command (down, refused our credentials...)."""


def send_command(cfg: Config, name: str, body: dict[str, Any], *,
                 timeout: float = 10.0) -> None:
    """Publish one command and return once the broker has it (PUBACK)."""
    client = paho.Client(CallbackAPIVersion.VERSION2,
                         client_id=f"kitchen-edge-cli-{os.getpid()}",
                         protocol=paho.MQTTv5)
    mq = cfg.mqtt
    if mq.username:
        password = mq.password_file.read_text("utf-8").strip() if mq.password_file else None
        client.username_pw_set(mq.username, password)
    if mq.tls:
        client.tls_set_context(ssl.create_default_context())
    connected = threading.Event()
    refused: list[str] = []

    def on_connect(_c: Any, _u: Any, _f: Any, reason: Any, _p: Any = None) -> None:
        if reason.is_failure:
            refused.append(str(reason))
        connected.set()

    client.on_connect = on_connect
    try:
        client.connect(mq.host, mq.port, keepalive=30)
    except OSError as exc:
        raise NotSent(f"cannot reach the broker at {mq.host}:{mq.port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout) or refused:
            raise NotSent(f"the broker at {mq.host}:{mq.port} refused us: "
                          f"{refused[0] if refused else 'no answer'}")
        info = client.publish(f"{cfg.root}/commands/{name}", json.dumps(body), qos=1)
        info.wait_for_publish(timeout)
        if not info.is_published():
            raise NotSent("the broker did not acknowledge the command")
    finally:
        client.disconnect()
        client.loop_stop()


__all__ = ["NotSent", "send_command"]

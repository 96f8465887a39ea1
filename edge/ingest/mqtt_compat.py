"""What the at-least-once consumer needs from aiomqtt beyond its public API, isolated here.

* Manual PUBACK. aiomqtt 2.x acknowledges through paho as soon as a message is parsed and
  offers no switch; paho has one (`manual_ack_set`, `ack`), on the paho client aiomqtt keeps
  in `Client._client`. That attribute is the one private name used, only in this module.
* Whether the broker resumed our session (CONNACK session present). aiomqtt does not pass
  it on; paho's `on_connect` callback has it, so ours records it and hands on to aiomqtt's.
* Taking a batch. aiomqtt's message iterator waits for one message; the rest of what the
  broker already sent is taken without waiting from the client's incoming queue. That queue
  is made through aiomqtt's public `queue_type` argument, so we keep the instance ourselves.

aiomqtt is pinned in pyproject.toml; tests/test_library_compat.py fails with this module's
message if the internal moves.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, cast

import aiomqtt
import paho.mqtt.client as paho


class LibraryInternalMoved(RuntimeError):
    """A pinned library no longer has the internal an adapter relies on."""


def paho_client(client: aiomqtt.Client) -> paho.Client:
    inner = getattr(client, "_client", None)
    if not isinstance(inner, paho.Client):
        raise LibraryInternalMoved(
            "aiomqtt.Client._client is no longer the paho client; manual PUBACK (acknowledge "
            "only after COMMIT) cannot be set up. Adapt edge/ingest/mqtt_compat.py to aiomqtt "
            f"{getattr(aiomqtt, '__version__', '?')}")
    return inner


@dataclass
class Session:
    """One connection's client, with batch taking and manual acknowledgement."""

    client: aiomqtt.Client
    queue: asyncio.Queue[aiomqtt.Message]
    # The CONNACK's session present flag: the broker kept our session, subscriptions and
    # queued messages with it. Known once the client's `async with` has entered.
    resumed: bool = False

    @property
    def messages(self) -> AsyncIterator[aiomqtt.Message]:
        return self.client.messages

    def take_nowait(self) -> aiomqtt.Message | None:
        """A message the broker already sent, or None; never waits."""
        try:
            return self.queue.get_nowait()
        except asyncio.QueueEmpty:
            return None

    def backlog(self) -> int:
        """Messages received and not yet taken."""
        return self.queue.qsize()

    def ack(self, message: aiomqtt.Message) -> None:
        """Send the PUBACK for a message we have made durable."""
        if message.qos > 0:
            paho_client(self.client).ack(message.mid, message.qos)


def open_session(*args: Any, **kwargs: Any) -> Session:
    """`aiomqtt.Client(*args, **kwargs)` with manual acknowledgement and a queue we hold.
    The queue is unbounded. MQTT v5 Receive Maximum is meant to bound what the broker sends;
    Mosquitto 2.0 honours it only for a resumed session's first window (see link.py)."""
    made: list[asyncio.Queue[aiomqtt.Message]] = []

    class _Incoming(asyncio.Queue[aiomqtt.Message]):
        def __init__(self, maxsize: int = 0) -> None:
            super().__init__(0)
            made.append(self)

    client = aiomqtt.Client(*args, queue_type=_Incoming, max_queued_incoming_messages=0,
                            **kwargs)
    if len(made) != 1:
        raise LibraryInternalMoved(
            "aiomqtt.Client did not build its incoming queue from queue_type; adapt "
            "edge/ingest/mqtt_compat.py")
    inner = paho_client(client)
    inner.manual_ack_set(True)
    session = Session(client, made[0])
    # aiomqtt registers with paho's VERSION2 callback API (flags as ConnectFlags).
    aiomqtt_on_connect = cast("paho.CallbackOnConnect_v2 | None", inner.on_connect)
    if aiomqtt_on_connect is None:
        raise LibraryInternalMoved(
            "aiomqtt.Client no longer sets paho's on_connect; the CONNACK's session present "
            "flag cannot be read. Adapt edge/ingest/mqtt_compat.py")

    def on_connect(client: paho.Client, userdata: Any, flags: paho.ConnectFlags,
                   reason_code: Any, properties: Any = None) -> None:
        session.resumed = bool(flags.session_present)
        aiomqtt_on_connect(client, userdata, flags, reason_code, properties)

    inner.on_connect = on_connect
    return session


__all__ = ["LibraryInternalMoved", "Session", "open_session", "paho_client"]

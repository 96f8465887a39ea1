"""The daemon's one MQTT connection: a persistent MQTT v5 session, kept across restarts.

Three aiomqtt 2.x defaults would lose orders, and each is turned off here:

* paho acknowledges a QoS 1 message as soon as it is parsed, before our code sees it. We
  switch paho to manual acknowledgement; the consumer sends the PUBACK only after the
  transaction holding the message has committed.
* `clean_start` defaults to MQTT_CLEAN_START_FIRST_ONLY, so the first connect of every
  process throws the broker-side session (and every order queued in it) away. We always
  connect with clean start off and a long session expiry.
* A bounded incoming queue drops messages when full, after paho acknowledged them. Ours is
  unbounded. MQTT v5 Receive Maximum should bound it, but Mosquitto 2.0 honours it only for
  the first window of a resumed session: once PUBACKs flow it sends the rest of the queue,
  and on the next connection it resends everything still unacknowledged.

That last point shapes the waits. A broker answers in order, so a SUBACK or PUBACK comes after
every message it sent before it, and paho decodes one packet per event-loop turn: with a
backlog of thousands on a loaded box, an acknowledgement is many seconds late on a healthy
connection. aiomqtt's 10 s wait then tears the connection down, the broker resends the whole
backlog to the next one, and the kitchen loops without ever getting in. So acknowledgements
are waited for without a timeout (`ACK_WAIT`): a dead connection is found by keepalive (paho
closes the socket when the broker stays silent) and by the consumer's message iterator, which
raises on that disconnect and takes the connection's tasks down with it. On a resumed
session the SUBSCRIBE is not waited for at all (the subscriptions are in the session).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import ssl
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import structlog
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from edge import __version__
from edge.backoff import Backoff
from edge.clock import Clock, SystemClock, rfc3339
from edge.config.models import Config
from edge.ingest.mqtt_compat import Session, open_session

log = structlog.get_logger(__name__)

Consumer = Callable[[Session], Awaitable[None]]
# Reconnect: 1 s, 2 s, 4 s ... up to 30 s, never less than half the ceiling.
RECONNECT_BASE = 1.0
RECONNECT_CAP = 30.0
# CONNACK is the first packet on a connection, ahead of any resend: this wait is real.
CONNACK_TIMEOUT = 10.0
# SUBACK and PUBACK can be behind a resent backlog: no timeout (see the module docstring).
# The consumer runs meanwhile and its message iterator raises if the connection drops.
ACK_WAIT = math.inf
# A new session has nothing queued ahead of its SUBACK; generous for a loaded box.
NEW_SESSION_SUBACK_TIMEOUT = 30.0


@dataclass
class Outgoing:
    topic: str
    payload: bytes
    retain: bool
    on_sent: Callable[[], Awaitable[None]] | None = None


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()


def _raise_if_cancelling() -> None:
    """Re-raise a cancel that aiomqtt swallowed. Its publish/subscribe wait in
    asyncio.wait_for, which on Python 3.11 returns the result instead of raising when the
    PUBACK/SUBACK lands in the same loop iteration as task.cancel(); the task then waits
    forever and so does the daemon's shutdown or reload."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError


class BrokerLink:
    def __init__(self, cfg: Config, *, clock: Clock | None = None,
                 password: str | None = None) -> None:
        self.cfg = cfg
        self.clock = clock or SystemClock()
        self.password = password
        self.connected = asyncio.Event()
        self.ever_connected = asyncio.Event()
        self.client: aiomqtt.Client | None = None
        self.started_at = self.clock.now()
        self.extra_state: dict[str, Any] = {}
        self._retained: OrderedDict[str, Outgoing] = OrderedDict()
        self._ordered: deque[Outgoing] = deque()
        self._wake = asyncio.Event()
        # Set while nothing waits in the queues (the broker has taken all of it).
        self._drained = asyncio.Event()
        self._drained.set()
        self._stopping = False

    @property
    def state_topic(self) -> str:
        return f"{self.cfg.root}/edge/state"

    def _presence(self, state: str) -> bytes:
        # restamp: a step of the clock since the start (NTP syncing) moves the start with it.
        return encode({"state": state, "version": __version__, "since": rfc3339(
            self.clock.restamp(self.started_at) if state == "online" else self.clock.now()),
            **self.extra_state})

    def publish(self, topic: str, body: dict[str, Any] | bytes, *, retain: bool = False,
                on_sent: Callable[[], Awaitable[None]] | None = None) -> None:
        """Queue a message; it goes out on this connection or the next. Retained topics keep
        only their newest value, since a retained state superseded before it was sent is
        of no use to anyone."""
        payload = body if isinstance(body, bytes) else encode(body)
        item = Outgoing(topic, payload, retain, on_sent)
        if retain:
            self._retained.pop(topic, None)
            self._retained[topic] = item
        else:
            self._ordered.append(item)
        self._drained.clear()
        self._wake.set()

    def update_presence(self, **fields: Any) -> None:
        """Extra fields in {root}/edge/state (e.g. the WAN state), republished now."""
        self.extra_state.update(fields)
        if self.connected.is_set():
            self.publish(self.state_topic, self._presence("online"), retain=True)

    def _session(self) -> Session:
        mq = self.cfg.mqtt
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = mq.session_expiry
        props.ReceiveMaximum = mq.receive_maximum
        tls = ssl.create_default_context() if mq.tls else None
        return open_session(
            mq.host,
            mq.port,
            identifier=self.cfg.client_id,
            protocol=aiomqtt.ProtocolVersion.V5,
            clean_start=False,
            properties=props,
            keepalive=mq.keepalive,
            username=mq.username,
            password=self.password,
            tls_context=tls,
            timeout=CONNACK_TIMEOUT,
            will=aiomqtt.Will(self.state_topic, self._presence("offline"), qos=1, retain=True),
        )

    async def run(self, consume: Consumer) -> None:
        """Connect, consume, reconnect with capped backoff, until cancelled."""
        backoff = Backoff(RECONNECT_BASE, RECONNECT_CAP, floor=0.5)
        while True:
            session = self._session()
            client = session.client
            try:
                async with client:
                    backoff.succeeded()
                    async with asyncio.TaskGroup() as group:
                        await self._on_connect(session, group)
                        group.create_task(self._sender(client))
                        await consume(session)
                        raise aiomqtt.MqttError("consumer returned")
            except* aiomqtt.MqttError as group_exc:
                self._down()
                delay = backoff.failed()
                log.warning("mqtt_disconnected", error=str(group_exc.exceptions[0]),
                            retry_in=round(delay, 2), attempt=backoff.failures)
                await self.clock.sleep(delay)
            finally:
                self._down()

    def _down(self) -> None:
        self.connected.clear()
        self.client = None

    async def _on_connect(self, session: Session, group: asyncio.TaskGroup) -> None:
        client = session.client
        root = self.cfg.root
        topics = [(f"{root}/orders/+/events", 1), (f"{root}/commands/+", 1),
                  (f"{root}/openapp/in", 1)]
        if session.resumed:
            # The subscriptions are in the session, and the broker is resending its backlog
            # ahead of any SUBACK: the consumer starts now. Subscribing again still covers a
            # changed topic root; its SUBACK is awaited beside the consumer, not before it.
            group.create_task(self._subscribe(client, topics, ACK_WAIT))
        else:
            # A new session (first start, or a broker that lost its state): nothing is
            # queued for us, so the SUBACK comes at once; ready only after it. Bounded: no
            # consumer runs yet to notice that the connection died meanwhile.
            await self._subscribe(client, topics, NEW_SESSION_SUBACK_TIMEOUT)
        self.client = client
        self.connected.set()
        self.ever_connected.set()
        self.publish(self.state_topic, self._presence("online"), retain=True)
        log.info("mqtt_connected", broker=f"{self.cfg.mqtt.host}:{self.cfg.mqtt.port}",
                 client_id=self.cfg.client_id, session_present=session.resumed)

    @staticmethod
    async def _subscribe(client: aiomqtt.Client, topics: list[tuple[str, int]],
                         wait: float) -> None:
        try:
            codes = await client.subscribe(topics, timeout=wait)
        except aiomqtt.MqttError as exc:
            raise aiomqtt.MqttError(f"subscribe: {exc}") from exc
        _raise_if_cancelling()
        refused = [str(c) for c in codes if getattr(c, "is_failure", False)]
        if refused:
            log.error("mqtt_subscribe_refused", topics=[t for t, _ in topics], codes=refused)

    async def _sender(self, client: aiomqtt.Client) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._retained or self._ordered:
                # Dead letters keep their order; retained states go in the gaps.
                item = self._ordered[0] if self._ordered else next(iter(self._retained.values()))
                try:
                    await client.publish(item.topic, item.payload, qos=1, retain=item.retain,
                                         timeout=ACK_WAIT)
                except aiomqtt.MqttError as exc:
                    raise aiomqtt.MqttError(f"publish {item.topic}: {exc}") from exc
                _raise_if_cancelling()
                # Only forget it once the broker has it; a failure above leaves it queued.
                if self._ordered and self._ordered[0] is item:
                    self._ordered.popleft()
                elif self._retained.get(item.topic) is item:
                    del self._retained[item.topic]
                if item.on_sent is not None:
                    await item.on_sent()
            self._drained.set()

    async def flush(self) -> None:
        """Until the broker has taken every queued message (bound it with a timeout)."""
        await self._drained.wait()

    async def say_goodbye(self) -> None:
        """Clean shutdown: the retained state says offline before we disconnect."""
        if not self.connected.is_set():
            # Stopped while (re)connecting: give the connection a moment to come up.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(2):
                    await self.connected.wait()
        client = self.client
        if client is None:
            return
        try:
            async with asyncio.timeout(2):
                await client.publish(self.state_topic, self._presence("offline"), qos=1,
                                     retain=True)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("mqtt_goodbye_failed", error=str(exc))

    def now(self) -> datetime:
        return self.clock.now()


__all__ = ["BrokerLink", "Outgoing", "Session", "encode", "paho"]

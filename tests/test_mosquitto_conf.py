"""config/mosquitto.conf and config/mosquitto.acl, run by a real Mosquitto.

The broker gets the shipped files with only ports and paths changed (and `user` set to whoever
runs the test, so a root test run does not drop to the `mosquitto` user and lose access to
tmp_path). Every rewrite is counted, so a change to the shipped conf that the rewrite no longer
matches fails loudly instead of testing something else.
"""

from __future__ import annotations

import os
import pwd
import queue
import re
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.broker import free_port, wait_port
from tests.procs import stop_by_pid

REPO = Path(__file__).resolve().parent.parent
CONF = REPO / "config" / "mosquitto.conf"
ACL = REPO / "config" / "mosquitto.acl"

NOT_AUTHORIZED = 0x87
SUCCESS = 0x00
NO_MATCHING_SUBSCRIBERS = 0x10  # still a success: the broker took the message
SEVEN_DAYS = 7 * 24 * 3600
TIMEOUT = 10.0

PASSWORDS = {"kitchen-edge": "daemon-pw", "publisher": "pub-pw", "operator": "op-pw",
             "openapp": "oa-pw"}

pytestmark = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="mosquitto is not installed",
)


@dataclass
class KitchenBroker:
    """Mosquitto running the shipped kitchen configuration, owned by the test (by pid)."""

    workdir: Path
    lan_port: int = field(default_factory=free_port)
    loopback_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        text = CONF.read_text()
        text = _sub_once(r"^listener 1883$", f"listener {self.lan_port} 127.0.0.1", text)
        text = _sub_once(
            r"^listener 1884 127\.0\.0\.1$", f"listener {self.loopback_port} 127.0.0.1", text
        )
        text, n = re.subn(
            r"^(password_file|acl_file) /etc/mosquitto/",
            rf"\1 {self.workdir}/",
            text,
            flags=re.MULTILINE,
        )
        assert n == 4, f"expected 2 password_file + 2 acl_file paths, rewrote {n}"
        text += (
            "\n# --- test adaptation ---\n"
            f"persistence_location {self.workdir}/\n"
            f"user {pwd.getpwuid(os.geteuid()).pw_name}\n"
            f"log_dest file {self.workdir}/mosquitto.log\n"
            "log_type error\nlog_type warning\nlog_type notice\n"
        )
        (self.workdir / "mosquitto.conf").write_text(text)
        shutil.copyfile(ACL, self.workdir / "kitchen-edge.acl")
        pwfile = self.workdir / "kitchen-edge.passwd"
        pwfile.write_text("")
        for user, password in PASSWORDS.items():
            subprocess.run(
                ["mosquitto_passwd", "-b", str(pwfile), user, password],
                check=True,
                capture_output=True,
            )

    def start(self) -> KitchenBroker:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        with open(self.workdir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(
                [exe, "-c", str(self.workdir / "mosquitto.conf")],
                stdout=err,
                stderr=err,
                cwd=self.workdir,
            )
        try:
            wait_port(self.lan_port)
            wait_port(self.loopback_port)
        except TimeoutError:
            self.stop()
            raise AssertionError(self.logs()) from None
        return self

    def stop(self) -> None:
        """SIGTERM (Mosquitto saves its database on the way out), SIGKILL only if it hangs."""
        if self.proc is None:
            return
        stop_by_pid(self.proc)
        self.proc = None

    def logs(self) -> str:
        parts = []
        for name in ("stderr.log", "mosquitto.log"):
            path = self.workdir / name
            if path.exists():
                parts.append(path.read_text(errors="replace"))
        return "\n".join(parts)


def _sub_once(pattern: str, repl: str, text: str) -> str:
    new, n = re.subn(pattern, repl, text, flags=re.MULTILINE)
    assert n == 1, f"{pattern!r} matched {n} times in config/mosquitto.conf"
    return new


class Client:
    """A paho client driven synchronously: every call waits for the broker's answer."""

    def __init__(
        self,
        client_id: str,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv5,
    ) -> None:
        self.protocol = protocol
        self.mqttc = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=protocol,
            reconnect_on_failure=False,
        )
        self.messages: queue.Queue[mqtt.MQTTMessage] = queue.Queue()
        self.connack: queue.Queue[tuple[int, bool]] = queue.Queue()
        self._acks: dict[int, int] = {}
        self._suback: dict[int, list[int]] = {}
        self._cond = threading.Condition()
        self.mqttc.on_connect = self._on_connect
        self.mqttc.on_message = self._on_message
        self.mqttc.on_publish = self._on_publish
        self.mqttc.on_subscribe = self._on_subscribe

    # paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, _c: Any, _u: Any, flags: Any, rc: Any, _p: Any) -> None:
        self.connack.put((int(rc.value), bool(flags.session_present)))

    def _on_message(self, _c: Any, _u: Any, msg: mqtt.MQTTMessage) -> None:
        self.messages.put(msg)

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        with self._cond:
            self._acks[mid] = int(rc.value)
            self._cond.notify_all()

    def _on_subscribe(self, _c: Any, _u: Any, mid: int, rcs: Any, _p: Any) -> None:
        with self._cond:
            self._suback[mid] = [int(rc.value) for rc in rcs]
            self._cond.notify_all()

    # blocking API --------------------------------------------------------------------------
    def connect(
        self,
        port: int,
        user: str | None = None,
        password: str | None = None,
        *,
        persistent: bool = False,
    ) -> tuple[int, bool]:
        """(CONNACK reason code, session present). The socket is closed again on refusal."""
        if user is not None:
            self.mqttc.username_pw_set(user, password)
        kwargs: dict[str, Any] = {}
        if self.protocol == MQTTProtocolVersion.MQTTv5:
            props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
            if persistent:
                props.SessionExpiryInterval = SEVEN_DAYS
            kwargs = {"clean_start": not persistent, "properties": props}
        self.mqttc.connect("127.0.0.1", port, keepalive=30, **kwargs)
        self.mqttc.loop_start()
        rc, present = self.connack.get(timeout=TIMEOUT)
        if rc != SUCCESS:
            self.close()
        return rc, present

    def subscribe(self, topic: str) -> list[int]:
        _, mid = self.mqttc.subscribe(topic, qos=1)
        assert mid is not None
        with self._cond:
            assert self._cond.wait_for(lambda: mid in self._suback, TIMEOUT), "no SUBACK"
            return self._suback.pop(mid)

    def publish(self, topic: str, payload: bytes | str, *, retain: bool = False) -> int:
        """Publish at QoS 1 and return the PUBACK reason code."""
        return self.publish_many([(topic, payload)], retain=retain)[0]

    def publish_many(
        self, items: list[tuple[str, bytes | str]], *, retain: bool = False
    ) -> list[int]:
        mids = [self.mqttc.publish(t, p, qos=1, retain=retain).mid for t, p in items]
        with self._cond:
            done = self._cond.wait_for(lambda: all(m in self._acks for m in mids), TIMEOUT * 3)
            assert done, f"{sum(m in self._acks for m in mids)}/{len(mids)} PUBACKs"
            return [self._acks.pop(m) for m in mids]

    def receive_until(self, topic: str, payload: bytes) -> list[mqtt.MQTTMessage]:
        """Every message up to and including the sentinel (topic, payload)."""
        seen: list[mqtt.MQTTMessage] = []
        while True:
            msg = self.messages.get(timeout=TIMEOUT)
            seen.append(msg)
            if msg.topic == topic and msg.payload == payload:
                return seen

    def receive(self, count: int) -> list[mqtt.MQTTMessage]:
        return [self.messages.get(timeout=TIMEOUT) for _ in range(count)]

    def close(self) -> None:
        self.mqttc.disconnect()
        self.mqttc.loop_stop()


@pytest.fixture
def kbroker(tmp_path: Path) -> Iterator[KitchenBroker]:
    b = KitchenBroker(tmp_path / "mosquitto")
    b.prepare()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture
def clients() -> Iterator[list[Client]]:
    made: list[Client] = []
    yield made
    for c in made:
        c.close()


def _client(made: list[Client], cid: str, **kw: Any) -> Client:
    c = Client(cid, **kw)
    made.append(c)
    return c


def _daemon(made: list[Client], port: int, *, persistent: bool = False) -> Client:
    d = _client(made, "kitchen-edge-x")
    rc, _ = d.connect(port, "kitchen-edge", PASSWORDS["kitchen-edge"], persistent=persistent)
    assert rc == SUCCESS
    return d


FORBIDDEN_FOR_PUBLISHER = [
    "kitchen/x/orders/o1/status",
    "kitchen/x/edge/state",
    "kitchen/x/commands/reprint",
    "kitchen/x/dead-letter",
    "kitchen/x/printers/hot-line/state",
    "kitchen/x/openapp/in",
    "kitchen/x/openapp/out",
    "kitchen/x/commands/stock",
    "kitchen/x/menu/availability",
]


def test_publisher_may_publish_order_events_only(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    daemon = _daemon(clients, kbroker.lan_port)
    assert daemon.subscribe("kitchen/#") == [1]
    pub = _client(clients, "pos-1")
    assert pub.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS

    assert pub.publish("kitchen/x/orders/o1/events", b"created") == SUCCESS
    codes = pub.publish_many([(t, b"forged") for t in FORBIDDEN_FOR_PUBLISHER])
    assert codes == [NOT_AUTHORIZED] * len(FORBIDDEN_FOR_PUBLISHER)
    # Mosquitto delivers one publisher's messages in order, so once this sentinel arrives
    # any forged message that got through would already have been seen.
    assert pub.publish("kitchen/x/orders/o1/events", b"sentinel") == SUCCESS

    got = daemon.receive_until("kitchen/x/orders/o1/events", b"sentinel")
    assert [(m.topic, m.payload) for m in got] == [
        ("kitchen/x/orders/o1/events", b"created"),
        ("kitchen/x/orders/o1/events", b"sentinel"),
    ]


def test_mqtt311_publisher_is_dropped_silently(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    """MQTT 3.1.1 has no reason codes: the PUBACK comes, the message does not."""
    daemon = _daemon(clients, kbroker.lan_port)
    daemon.subscribe("kitchen/#")
    pub = _client(clients, "old-pos", protocol=MQTTProtocolVersion.MQTTv311)
    assert pub.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
    assert pub.publish("kitchen/x/edge/state", b"forged") == SUCCESS
    assert pub.publish("kitchen/x/orders/o2/events", b"sentinel") == SUCCESS
    got = daemon.receive_until("kitchen/x/orders/o2/events", b"sentinel")
    assert [m.topic for m in got] == ["kitchen/x/orders/o2/events"]


def test_daemon_publishes_status_that_publishers_read_but_not_dead_letters(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    daemon = _daemon(clients, kbroker.lan_port)
    pub = _client(clients, "qr-bridge")
    assert pub.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
    assert pub.subscribe("kitchen/+/orders/+/status") == [1]
    assert pub.subscribe("kitchen/+/edge/state") == [1]
    # Mosquitto 2.0 grants the SUBACK and filters by the read ACL at delivery instead.
    assert pub.subscribe("kitchen/x/dead-letter") == [1]
    assert pub.subscribe("kitchen/x/commands/reprint") == [1]

    assert daemon.publish("kitchen/x/dead-letter", b"{}") == SUCCESS
    assert daemon.publish("kitchen/x/commands/reprint", b"{}") == SUCCESS
    assert daemon.publish("kitchen/x/orders/o1/status", b"accepted", retain=True) == SUCCESS
    assert daemon.publish("kitchen/x/edge/state", b"online", retain=True) == SUCCESS
    got = pub.receive_until("kitchen/x/edge/state", b"online")
    assert [m.topic for m in got] == ["kitchen/x/orders/o1/status", "kitchen/x/edge/state"]


def test_operator_sends_commands_and_nothing_else(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    daemon = _daemon(clients, kbroker.lan_port)
    daemon.subscribe("kitchen/#")
    op = _client(clients, "pass-tablet")
    assert op.connect(kbroker.lan_port, "operator", PASSWORDS["operator"])[0] == SUCCESS
    assert op.subscribe("kitchen/#") == [1]
    assert op.publish("kitchen/x/orders/o1/events", b"forged") == NOT_AUTHORIZED
    assert op.publish("kitchen/x/edge/state", b"forged") == NOT_AUTHORIZED
    assert op.publish("kitchen/x/openapp/in", b"forged") == NOT_AUTHORIZED
    assert op.publish("kitchen/x/openapp/out", b"forged") == NOT_AUTHORIZED
    assert op.publish("kitchen/x/menu/availability", b"forged") == NOT_AUTHORIZED
    for name in ("reprint", "order", "store", "stock"):
        assert op.publish(f"kitchen/x/commands/{name}", name.encode()) == SUCCESS
        got = daemon.receive_until(f"kitchen/x/commands/{name}", name.encode())
        assert [m.payload for m in got] == [name.encode()]
    # Only one level: nothing below a command's topic.
    assert op.publish("kitchen/x/commands/order/extra", b"x") == NOT_AUTHORIZED


def test_openapp_bridge_sends_table_requests_and_reads_only_its_answers(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    daemon = _daemon(clients, kbroker.lan_port)
    daemon.subscribe("kitchen/#")
    bridge = _client(clients, "openapp-bridge")
    assert bridge.connect(kbroker.lan_port, "openapp", PASSWORDS["openapp"])[0] == SUCCESS
    for topic in ("kitchen/+/openapp/out", "kitchen/+/menu/availability",
                  "kitchen/+/orders/+/status", "kitchen/x/dead-letter"):
        assert bridge.subscribe(topic) == [1]
    forged = ["kitchen/x/openapp/out", "kitchen/x/orders/o1/events", "kitchen/x/commands/stock",
              "kitchen/x/menu/availability", "kitchen/x/dead-letter"]
    assert bridge.publish_many([(t, b"forged") for t in forged]) == \
        [NOT_AUTHORIZED] * len(forged)
    assert bridge.publish("kitchen/x/openapp/in", b"scan") == SUCCESS
    got = daemon.receive_until("kitchen/x/openapp/in", b"scan")
    assert [(m.topic, m.payload) for m in got] == [("kitchen/x/openapp/in", b"scan")]

    # What the daemon publishes: OpenApp hears its answers and the availability, not the
    # kitchen's other topics (dead letters carry other publishers' payloads).
    assert daemon.publish("kitchen/x/dead-letter", b"{}") == SUCCESS
    assert daemon.publish("kitchen/x/orders/o1/status", b"accepted", retain=True) == SUCCESS
    assert daemon.publish("kitchen/x/menu/availability", b"stock", retain=True) == SUCCESS
    assert daemon.publish("kitchen/x/openapp/out", b"answer") == SUCCESS
    got = bridge.receive_until("kitchen/x/openapp/out", b"answer")
    assert [m.topic for m in got] == ["kitchen/x/menu/availability", "kitchen/x/openapp/out"]

    # Publishers (and anonymous loopback clients) may read the availability too.
    pub = _client(clients, "qr-bridge")
    assert pub.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
    assert pub.subscribe("kitchen/+/menu/availability") == [1]
    assert pub.subscribe("kitchen/+/openapp/out") == [1]
    assert daemon.publish("kitchen/x/openapp/out", b"not-for-you") == SUCCESS
    assert daemon.publish("kitchen/x/menu/availability", b"stock-2", retain=True) == SUCCESS
    got = pub.receive_until("kitchen/x/menu/availability", b"stock-2")
    assert [m.payload for m in got] == [b"stock", b"stock-2"]


def test_lan_listener_refuses_anonymous_and_wrong_passwords(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    assert _client(clients, "anon").connect(kbroker.lan_port)[0] == NOT_AUTHORIZED
    wrong = _client(clients, "guess")
    rc, _ = wrong.connect(kbroker.lan_port, "kitchen-edge", "guess")
    assert rc != SUCCESS
    old = _client(clients, "anon-311", protocol=MQTTProtocolVersion.MQTTv311)
    assert old.connect(kbroker.lan_port)[0] != SUCCESS


def test_loopback_listener_gives_anonymous_only_publisher_rights(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    daemon = _daemon(clients, kbroker.loopback_port)
    daemon.subscribe("kitchen/#")
    wrong = _client(clients, "guess")
    assert wrong.connect(kbroker.loopback_port, "kitchen-edge", "guess")[0] != SUCCESS

    anon = _client(clients, "demo")
    assert anon.connect(kbroker.loopback_port)[0] == SUCCESS
    assert anon.publish("kitchen/x/edge/state", b"forged") == NOT_AUTHORIZED
    assert anon.publish("kitchen/x/commands/reprint", b"forged") == NOT_AUTHORIZED
    assert anon.publish("kitchen/x/orders/o1/events", b"demo-order") == SUCCESS
    got = daemon.receive_until("kitchen/x/orders/o1/events", b"demo-order")
    assert [m.payload for m in got] == [b"demo-order"]


def _take_offline_session(made: list[Client], port: int) -> None:
    d = _client(made, "kitchen-edge-x")
    rc, _ = d.connect(port, "kitchen-edge", PASSWORDS["kitchen-edge"], persistent=True)
    assert rc == SUCCESS
    assert d.subscribe("kitchen/+/orders/+/events") == [1]
    d.close()


def test_daemon_session_keeps_more_than_a_thousand_messages_while_offline(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    _take_offline_session(clients, kbroker.lan_port)
    pub = _client(clients, "pos-1")
    assert pub.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
    sent = [f"evt-{i}".encode() for i in range(3000)]
    topics = [f"kitchen/x/orders/o{i % 97}/events" for i in range(len(sent))]
    codes = pub.publish_many(list(zip(topics, sent, strict=True)))
    assert set(codes) == {SUCCESS}

    back = _client(clients, "kitchen-edge-x")
    rc, present = back.connect(
        kbroker.lan_port, "kitchen-edge", PASSWORDS["kitchen-edge"], persistent=True
    )
    assert (rc, present) == (SUCCESS, True)
    assert sorted(m.payload for m in back.receive(len(sent))) == sorted(sent)


def test_queued_messages_and_retained_status_survive_a_broker_restart(
    kbroker: KitchenBroker, clients: list[Client]
) -> None:
    daemon = _daemon(clients, kbroker.lan_port)
    rc = daemon.publish("kitchen/x/orders/o1/status", b"accepted", retain=True)
    assert rc == NO_MATCHING_SUBSCRIBERS
    daemon.close()
    _take_offline_session(clients, kbroker.lan_port)
    pub = _client(clients, "pos-1")
    assert pub.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
    sent = [f"evt-{i}".encode() for i in range(1500)]
    assert set(pub.publish_many([("kitchen/x/orders/o1/events", p) for p in sent])) == {SUCCESS}
    pub.close()

    kbroker.stop()
    assert (kbroker.workdir / "mosquitto.db").exists(), kbroker.logs()
    kbroker.start()

    back = _client(clients, "kitchen-edge-x")
    rc, present = back.connect(
        kbroker.lan_port, "kitchen-edge", PASSWORDS["kitchen-edge"], persistent=True
    )
    assert (rc, present) == (SUCCESS, True)
    got = back.receive(len(sent))
    # One publisher, one topic: the order the kitchen sees is the order the POS sent.
    assert [m.payload for m in got] == sent

    watcher = _client(clients, "qr-bridge")
    assert watcher.connect(kbroker.lan_port, "publisher", PASSWORDS["publisher"])[0] == SUCCESS
    watcher.subscribe("kitchen/x/orders/+/status")
    (retained,) = watcher.receive(1)
    assert (retained.payload, retained.retain) == (b"accepted", True)

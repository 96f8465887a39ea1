"""The library internals the daemon relies on are still where the adapters expect them.

Each adapter module (edge/store/aiosqlite_compat.py, edge/ingest/mqtt_compat.py,
edge/discovery/zeroconf_compat.py) is the only place that touches a library's internals; a
library upgrade that moves one fails here, naming the adapter to fix, instead of losing
acknowledgements or discovery silently at run time.
"""

from __future__ import annotations

import threading
from pathlib import Path

import aiomqtt
import aiosqlite
import paho.mqtt.client as paho
import pytest
import zeroconf
import zeroconf.const

from edge.discovery import zeroconf_compat
from edge.ingest import mqtt_compat
from edge.store import aiosqlite_compat


async def test_aiosqlite_runs_a_function_on_its_worker_thread(tmp_path: Path) -> None:
    conn = await aiosqlite.connect(str(tmp_path / "x.db"))
    try:
        seen: list[str] = []

        def unit(raw: object) -> int:
            assert type(raw).__name__ == "Connection"
            seen.append(threading.current_thread().name)
            return int(raw.execute("SELECT 41 + 1").fetchone()[0])  # type: ignore[attr-defined]

        assert await aiosqlite_compat.run_on_thread(conn, unit) == 42
        assert seen and seen[0] != threading.current_thread().name
    finally:
        await conn.close()


async def test_aiosqlite_adapter_says_which_internal_moved(tmp_path: Path) -> None:
    class Moved:
        pass

    with pytest.raises(aiosqlite_compat.LibraryInternalMoved, match=r"aiosqlite_compat\.py"):
        await aiosqlite_compat.run_on_thread(Moved(), lambda c: c)  # type: ignore[arg-type]


async def test_aiomqtt_session_has_manual_ack_and_our_queue() -> None:
    session = mqtt_compat.open_session("127.0.0.1", 1, identifier="compat-test",
                                       protocol=aiomqtt.ProtocolVersion.V5)
    inner = mqtt_compat.paho_client(session.client)
    assert isinstance(inner, paho.Client)
    assert inner._manual_ack is True  # what manual_ack_set(True) sets in paho 2.x
    # The queue we hold is the one aiomqtt's message iterator reads.
    assert session.take_nowait() is None and session.backlog() == 0
    assert len(session.client.messages) == 0  # type: ignore[arg-type]
    session.queue.put_nowait("probe")  # type: ignore[arg-type]
    assert len(session.client.messages) == 1  # type: ignore[arg-type]
    assert session.take_nowait() == "probe"


async def test_aiomqtt_adapter_says_which_internal_moved() -> None:
    class Moved:
        pass

    with pytest.raises(mqtt_compat.LibraryInternalMoved, match=r"mqtt_compat\.py"):
        mqtt_compat.paho_client(Moved())  # type: ignore[arg-type]


def test_zeroconf_still_exports_the_query_classes() -> None:
    question, outgoing = zeroconf_compat._classes()
    out = outgoing(zeroconf_compat.FLAGS_QUERY)
    out.add_question(question("Kitchen._pdl-datastream._tcp.local.",
                              zeroconf_compat.TYPE_SRV, zeroconf_compat.CLASS_IN))
    packets = out.packets()
    assert packets and b"Kitchen" in packets[0]
    # Our RFC numbers are the ones zeroconf itself uses.
    assert (zeroconf_compat.TYPE_SRV, zeroconf_compat.TYPE_TXT, zeroconf_compat.CLASS_IN) == (
        zeroconf.const._TYPE_SRV, zeroconf.const._TYPE_TXT, zeroconf.const._CLASS_IN)


def test_zeroconf_adapter_says_which_internal_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(zeroconf, "DNSOutgoing")
    with pytest.raises(zeroconf_compat.LibraryInternalMoved, match=r"zeroconf_compat\.py"):
        zeroconf_compat._classes()

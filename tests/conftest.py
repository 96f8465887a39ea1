from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from edge.feed import Feed
from edge.store import Store
from tests.broker import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto on a free port with persistence in the test's tmp dir."""
    b = Broker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()


# Test files that share the machine's one multicast DNS port (UDP 5353, a zeroconf module
# constant): run in one worker when the suite runs in parallel (pytest-xdist --dist loadgroup),
# so one file's advertisements never land in another's browser.
_ONE_WORKER = {"test_mdns.py": "mdns", "test_discovery_e2e.py": "mdns"}


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """An open store on a fresh file, with its own feed; closed after the test."""
    s = Store(tmp_path / "k.db", Feed())
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        group = _ONE_WORKER.get(item.path.name)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Broker


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A private Mosquitto on a free port with persistence in the test's tmp dir."""
    b = Broker(tmp_path / "broker").start()
    try:
        yield b
    finally:
        b.stop()

"""Asking a bare mDNS question with zeroconf, isolated here.

zeroconf has no public call for "send one query with these questions now"; its own browser
and resolver build a `DNSOutgoing` with `DNSQuestion`s and hand it to `Zeroconf.async_send`.
Both classes are importable from the package top level (kept there "for backwards
compatibility", not in `__all__`). The record type and class numbers are RFC 1035 / 2782
facts, defined here rather than taken from zeroconf's private constants. zeroconf is pinned
in pyproject.toml; tests/test_library_compat.py fails with this module's message if the
classes move.
"""

from __future__ import annotations

from collections.abc import Iterable

import zeroconf
from zeroconf import Zeroconf

TYPE_TXT = 16        # RFC 1035
TYPE_SRV = 33        # RFC 2782
CLASS_IN = 1         # RFC 1035
FLAGS_QUERY = 0x0000  # QR bit clear: a query


class LibraryInternalMoved(RuntimeError):
    """A pinned library no longer has the internal an adapter relies on."""


def _classes() -> tuple[type, type]:
    question = getattr(zeroconf, "DNSQuestion", None)
    outgoing = getattr(zeroconf, "DNSOutgoing", None)
    if not isinstance(question, type) or not isinstance(outgoing, type):
        raise LibraryInternalMoved(
            "zeroconf no longer exports DNSQuestion / DNSOutgoing at its top level; adapt "
            f"edge/discovery/zeroconf_compat.py to zeroconf {zeroconf.__version__}")
    return question, outgoing


def ask_srv(zc: Zeroconf, fullnames: Iterable[str]) -> None:
    """Multicast one query asking for the SRV record of each service instance."""
    question, outgoing = _classes()
    out = outgoing(FLAGS_QUERY)
    for fullname in fullnames:
        out.add_question(question(fullname, TYPE_SRV, CLASS_IN))
    zc.async_send(out)


__all__ = ["CLASS_IN", "TYPE_SRV", "TYPE_TXT", "LibraryInternalMoved", "ask_srv"]

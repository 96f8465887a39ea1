"""The screens' last guard on personal data: nothing shaped like an e-mail address or a phone
number is shown, wherever it came from (an order note, an item note, a dead-lettered
payload). The order sources already leave the customer's contact details out; customers
still write them into notes."""

from __future__ import annotations

import re

REMOVED = "[removed]"

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+")
# Seven digits or more, with what people write between them in a phone number.
_PHONE = re.compile(r"\+?\(?\d(?:[\s().\-/]{0,3}\d){6,}")
# Digit runs that are not phone numbers: a date (2026-12-01, 2026-12-01T18:02), an IPv4
# address.
_NOT_PHONE = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}(?::\d{2})?)?|\d{1,3}(?:\.\d{1,3}){3}")


def _phone(match: re.Match[str]) -> str:
    return match.group(0) if _NOT_PHONE.fullmatch(match.group(0).strip()) else REMOVED


def scrub(text: str) -> str:
    # On every card line and board cell, at every change: the e-mail pattern rescans a long
    # run of letters from each of its characters, so it runs only where an @ is.
    if "@" in text:
        text = _EMAIL.sub(REMOVED, text)
    return _PHONE.sub(_phone, text)


def scrub_opt(text: str | None) -> str | None:
    return None if text is None else scrub(text)


__all__ = ["REMOVED", "scrub", "scrub_opt"]

"""A board section (a component's JSON-able status) shown as an operator-page panel without a
template of its own: facts, tables, tones, and the privacy scrub."""

from __future__ import annotations

from edge.web.board import as_view, text


def test_a_section_as_facts_and_tables() -> None:
    view = as_view({
        "printers": [
            {"printer_id": "hot", "state": "online", "queued": 0, "unconfirmed": [],
             "stations": ["grill"]},
            {"printer_id": "bar", "state": "paper_out", "queued": 3,
             "unconfirmed": ["o-1/new/bar"], "detail": "paper out",
             "stations": ["drinks", "dessert"]},
        ],
        "printed": 12,
        "wan": None,
        "calls": {"pending": 2, "parked": 1},
        "parked": [],
        "last_error": "call +90 532 765 43 21 or ops@example.com",
    })
    [printers, parked] = view.tables
    assert printers.heading == "printers"
    assert printers.columns == ["printer id", "state", "queued", "unconfirmed", "stations",
                                "detail"]
    assert [r.cells for r in printers.rows] == [
        ["hot", "online", "0", "-", "grill", "-"],
        ["bar", "paper_out", "3", "o-1/new/bar", "drinks, dessert", "paper out"]]
    assert [r.tone for r in printers.rows] == ["good", "bad"]
    assert (parked.heading, parked.rows) == ("parked", [])
    facts = {f.label: (f.value, f.tone) for f in view.facts}
    assert facts["printed"] == ("12", None)
    assert facts["wan"] == ("-", None)
    assert facts["calls: pending"] == ("2", None)
    assert facts["calls: parked"] == ("1", None)
    assert facts["last error"][0] == "call [removed] or [removed]"


def test_values_as_text() -> None:
    assert text(True) == "yes" and text(2.345) == "2.3" and text([]) == "-"
    assert text({"a_b": 1}) == "a b 1"
    assert len(text("x" * 500)) == 200

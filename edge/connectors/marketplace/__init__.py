"""The delivery marketplace of seed 001 (CONTRACT section 9): the connector that polls each
configured marketplace and answers it (`component.py`), its HTTP reads (`client.py`), what a
listed order becomes (`importer.py`), the kitchen's answers (`replies.py`), the operator's
view and command (`views.py`, `cli.py`); the order schema, the mapping to kitchen events, and
a fake marketplace for tests and the demo."""

"""The delivery marketplace of seed 001: its order schema, the mapping to kitchen events,
and a fake marketplace for tests and the demo."""

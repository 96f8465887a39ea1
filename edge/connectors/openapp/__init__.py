"""OpenApp table ordering (seed 002, CONTRACT section 11): the component that publishes the
answers and pushes to OpenApp (`component.py`), and a small OpenApp to drive it from a
terminal, a demo or a test (`simulator.py`). The requests themselves are applied by the
kitchen's own pipeline (`edge.orders.openapp`)."""

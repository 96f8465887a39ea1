"""The aggregator order API of CONTRACT section 10 (seed 004): the kitchen plays OneTablet.

`component` runs it (the HTTP `api`, the webhooks' sender), `inbound` decides and records
each call of the platform in one durable transaction, `webhooks` queues the kitchen's answers
as a transactional reaction, `schema` validates what a delivery platform sends, `mapping`
turns it into kitchen events and builds the webhooks that go back, `cli` is `kitchen-edge
aggregator`, `fake_platform` plays the platform for tests and the demo.
"""

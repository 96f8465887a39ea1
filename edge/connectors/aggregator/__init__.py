"""The aggregator order API of CONTRACT section 10 (seed 004): the kitchen plays OneTablet.

`schema` validates what a delivery platform sends, `mapping` turns it into kitchen events and
builds the webhooks that go back, `fake_platform` plays the platform for tests and the demo.
"""

"""In-process order sources and their partners: the marketplace (seed 001), the aggregator
(seed 004) and OpenApp (seed 002) connectors live here, one package each, as components.

A connector takes orders in through `Context.intake` (durable before it answers its partner),
follows the kitchen through `Context.feed`, and calls its partner through the durable calls
outbox (`edge.orders.records.queue_call`, sent by a `CallSender`). Connectors never import
each other or another adapter.
"""

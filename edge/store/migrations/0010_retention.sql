-- Schema version 10: retention (issue 12, bounded growth). A final order older than the
-- retention period is compacted: its bulky rows go, this tombstone stays. It is what the
-- operator still sees of the order, and what keeps a late duplicate from printing again:
-- any event naming a compacted order is refused, a replay of one of its own events quietly
-- (as a duplicate, by `event_keys`), anything new as a dead letter.
CREATE TABLE order_tombstones (
    order_id       TEXT PRIMARY KEY,
    channel        TEXT NOT NULL,
    display_id     TEXT,
    fulfillment    TEXT,
    status         TEXT NOT NULL,      -- the final seed 003 status
    kitchen_stage  TEXT,
    paid_cents     INTEGER NOT NULL,
    refunded_cents INTEGER NOT NULL,
    lines          INTEGER NOT NULL,   -- order lines it had
    tickets        INTEGER NOT NULL,   -- print jobs that reached a printer
    created_at     TEXT NOT NULL,
    final_at       TEXT NOT NULL,      -- the order's last change (orders.updated_at)
    compacted_at   TEXT NOT NULL,
    event_keys     BLOB NOT NULL       -- 8 bytes of sha256(event_id) per stored event
) WITHOUT ROWID;
CREATE INDEX order_tombstones_by_compaction ON order_tombstones(compacted_at);
-- Retention finds its candidates by age without reading every order; only final orders are
-- in it, so the kitchen's many updates of working orders never touch it.
CREATE INDEX orders_final_by_update ON orders(updated_at)
    WHERE status IN ('completed','cancelled','void','refunded','partially_refunded');
-- Compaction finds an order's rows by order id; these two tables had no index for it.
CREATE INDEX calls_by_order_id ON calls(order_id);
CREATE INDEX kds_bumps_by_order ON kds_bumps(order_id);

-- Schema version 6: seed 004, the aggregator order API (CONTRACT section 10).
-- On the order: who brings a delivery (`fulfillment.service`: platform_delivery |
-- fleet_delivery), and the courier's last status before pick-up (`order.courier_status`).
ALTER TABLE orders ADD COLUMN service TEXT;
ALTER TABLE orders ADD COLUMN courier_status TEXT;

-- What a delivery platform POSTed to the aggregator API: the durable record a repeated
-- `POST /orders` is recognised by, and the courier's progress a step backwards is answered
-- 409 against. Written in the transaction that stores the order's events. Nothing about
-- the consumer or the courier is kept.
CREATE TABLE platform_orders (
    platform_id    TEXT PRIMARY KEY,     -- the platform's order id, `{id}` in its paths
    order_id       TEXT NOT NULL,        -- the kitchen's: ot-{id}
    store_id       TEXT NOT NULL,        -- store.merchant_supplied_id
    provider       TEXT NOT NULL,        -- store.provider_type
    fulfillment    TEXT NOT NULL,        -- pickup | dx_delivery | mx_fleet_delivery
    answer         TEXT NOT NULL,        -- waiting | accepted | store_closed: what the kitchen said on arrival
    received_at    TEXT NOT NULL,
    repeats        INTEGER NOT NULL DEFAULT 0,   -- the same id POSTed again
    dasher_status  TEXT,                 -- the courier's last status (seed 004's words)
    dasher_at      TEXT,
    cancelled_at   TEXT                  -- when the platform asked to cancel
);
CREATE INDEX platform_orders_by_time ON platform_orders(received_at);

-- Schema version 7: the marketplace connector (seed 001, CONTRACT section 9).

-- Every order a marketplace listed, as it was last listed: what the kitchen imported from
-- it, and what could not be imported (the field at fault), for the operator.
CREATE TABLE marketplace_orders (
    marketplace     TEXT NOT NULL,
    payment_key     TEXT NOT NULL,       -- the marketplace's key; 'unkeyed:{digest}' for an
                                         -- order that has no usable one
    market_order_id INTEGER,             -- the marketplace's integer id, when readable
    order_id        TEXT,                -- the kitchen's order id ("{marketplace}-{id}")
    status          INTEGER,             -- the marketplace status as last listed
    imported        INTEGER,             -- the status whose kitchen events are stored
    acked           INTEGER,             -- the status the marketplace said it acknowledged
    courier         TEXT,                -- restaurant | platform
    raw             TEXT NOT NULL,       -- the order as last listed, phone and e-mail removed
    problem         TEXT,                -- why it could not be imported as listed
    first_seen      TEXT NOT NULL,
    last_seen       TEXT NOT NULL,
    PRIMARY KEY (marketplace, payment_key)
);
CREATE INDEX marketplace_orders_by_order ON marketplace_orders(order_id);

-- How each marketplace answers: for `kitchen-edge marketplaces`, the board and the metrics.
CREATE TABLE marketplace_state (
    marketplace     TEXT PRIMARY KEY,
    state           TEXT NOT NULL,       -- starting | ok | down | timeout | bad_answer |
                                         -- unauthorized | rate_limited | error
    since           TEXT NOT NULL,       -- in this state since
    last_poll_at    TEXT,
    last_ok_at      TEXT,
    last_error      TEXT,
    failures        INTEGER NOT NULL DEFAULT 0,
    cancel_reasons  TEXT,                -- JSON {"id": "reason"} as the marketplace lists them
    reasons_at      TEXT
);

-- Schema version 8: the menu's running stock, the table check of seed 002 (prices, who
-- added a line, delivered lines, discounts), the tables OpenApp follows, and OpenApp's
-- messages in and out (CONTRACT sections 8 and 11).

-- One row per product of the menu file, created when the file first names it. The file's
-- own figures are remembered so a reload keeps the running count unless the file changed.
CREATE TABLE menu_stock (
    product_id   TEXT PRIMARY KEY,
    stock        INTEGER,              -- portions left; NULL: not counted
    listed       INTEGER NOT NULL DEFAULT 1,
    marked_out   INTEGER NOT NULL DEFAULT 0,   -- 1: the kitchen set it to 0 (86), not sold out
    file_stock   INTEGER,              -- what menu.yaml said at the last load
    file_listed  INTEGER NOT NULL DEFAULT 1,
    in_menu      INTEGER NOT NULL DEFAULT 1,   -- 0: the file no longer names it
    updated_at   TEXT NOT NULL
);

-- What the check needs of each order line beyond what the kitchen prints.
CREATE TABLE check_lines (
    order_id     TEXT NOT NULL,
    line_id      TEXT NOT NULL,
    product_id   TEXT,
    unit_price   INTEGER,              -- minor units; NULL: unknown (no price, no product)
    added_by     TEXT NOT NULL,        -- pos | openapp
    stock_taken  INTEGER NOT NULL DEFAULT 0,   -- portions taken from menu_stock for it
    delivered_at TEXT,
    PRIMARY KEY (order_id, line_id)
);

CREATE TABLE check_discounts (
    order_id     TEXT NOT NULL,
    discount_id  TEXT NOT NULL,
    amount       INTEGER NOT NULL,     -- minor units
    reason       TEXT,
    at           TEXT NOT NULL,
    PRIMARY KEY (order_id, discount_id)
);

-- A table OpenApp asked about is streamed (POS-side changes pushed) until ORDER_CLOSED.
CREATE TABLE table_streams (
    table_id     TEXT PRIMARY KEY,
    active       INTEGER NOT NULL,
    started_at   TEXT NOT NULL,
    ended_at     TEXT
);

-- OpenApp requests as received (durable before the PUBACK); applied by the applier.
CREATE TABLE openapp_in (
    message_id   TEXT PRIMARY KEY,
    message_type TEXT NOT NULL,
    table_id     TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    applied      INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX openapp_in_unapplied ON openapp_in(applied) WHERE applied = 0;

-- One answer per submission_id, whatever message carried it.
CREATE TABLE openapp_submissions (
    submission_id TEXT PRIMARY KEY,
    table_id     TEXT NOT NULL,
    order_id     TEXT,
    result       TEXT NOT NULL,        -- JSON: accepted, rejected, order_id, rejection_reason
    at           TEXT NOT NULL
);

-- Messages to OpenApp, written in the transaction of what they report; published in id
-- order and marked sent once the broker has them.
CREATE TABLE openapp_out (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id   TEXT NOT NULL UNIQUE,
    message_type TEXT NOT NULL,
    table_id     TEXT NOT NULL,
    body         TEXT NOT NULL,
    created_at   TEXT NOT NULL,
    handed_at    TEXT,                 -- given to the broker link (after a durable write)
    sent_at      TEXT                  -- the broker acknowledged it
);
CREATE INDEX openapp_out_unsent ON openapp_out(id) WHERE sent_at IS NULL;

-- The table's open check is found by its table.
CREATE INDEX orders_dine_in_by_table ON orders(table_label, created_at)
    WHERE fulfillment = 'dine_in';

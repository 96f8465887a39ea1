-- Schema version 3: the durable outbox of calls to partners (marketplaces, aggregators).
-- Separate from `outbox`, whose seq must stay contiguous per site (CONTRACT section 7).

CREATE TABLE calls (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    destination  TEXT NOT NULL,             -- the partner's name, as its connector calls it
    order_id     TEXT,                      -- per (destination, order_id): strictly in id order
    method       TEXT NOT NULL,             -- GET | POST | PUT | PATCH | DELETE
    path         TEXT NOT NULL,             -- appended to the destination's base URL
    body         TEXT,                      -- JSON text, or NULL for no body
    call_key     TEXT UNIQUE,               -- the same call queued twice is one row
    state        TEXT NOT NULL DEFAULT 'pending',   -- pending | done | parked
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      TEXT NOT NULL,             -- not sent before this time
    last_error   TEXT,
    status_code  INTEGER,                   -- the partner's last HTTP answer
    created_at   TEXT NOT NULL,
    done_at      TEXT
);
CREATE INDEX calls_open ON calls(destination, state, next_at) WHERE state != 'done';
CREATE INDEX calls_by_order ON calls(destination, order_id, id);

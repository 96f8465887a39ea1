-- Schema version 1: the whole kitchen-edge state. One file, one writer.

CREATE TABLE events (
    event_id     TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    type         TEXT NOT NULL,
    occurred_at  TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    channel      TEXT NOT NULL,
    device       TEXT,
    topic        TEXT NOT NULL,
    payload      TEXT NOT NULL,
    applied      INTEGER NOT NULL DEFAULT 1   -- ingest stores 0: acknowledged, not yet applied
);
CREATE INDEX events_by_order ON events(order_id, received_at);
CREATE INDEX events_unapplied ON events(applied) WHERE applied = 0;

CREATE TABLE orders (
    order_id        TEXT PRIMARY KEY,
    channel         TEXT NOT NULL,
    device          TEXT,
    display_id      TEXT,
    fulfillment     TEXT,              -- dine_in | pickup | delivery
    table_label     TEXT,
    courier         TEXT,
    note            TEXT,
    status          TEXT NOT NULL,     -- seed 003 status, snake_case
    held_from       TEXT,              -- the status a Held order returns to
    kitchen_stage   TEXT,              -- accepted | ready | out_for_delivery | completed | cancelled | rejected
    prep_minutes    INTEGER,
    scheduled_for   TEXT,
    paid_cents      INTEGER NOT NULL DEFAULT 0,
    refunded_cents  INTEGER NOT NULL DEFAULT 0,
    hold_count      INTEGER NOT NULL DEFAULT 0,
    fired_course    INTEGER,           -- highest course the kitchen was told to fire
    timeline_digest TEXT,              -- last timeline sent as a status record
    created_at      TEXT NOT NULL,
    updated_at      TEXT NOT NULL,
    intake_event_id TEXT NOT NULL
);

CREATE TABLE order_lines (
    order_id    TEXT NOT NULL,
    line_id     TEXT NOT NULL,
    batch_ref   TEXT NOT NULL,          -- 'initial' or the batch_id that added it
    name        TEXT NOT NULL,
    qty         INTEGER NOT NULL,
    category    TEXT,
    modifiers   TEXT NOT NULL DEFAULT '[]',
    note        TEXT,
    allergens   TEXT NOT NULL DEFAULT '[]',
    course      INTEGER,
    state       TEXT NOT NULL DEFAULT 'active',   -- active | voided | comped
    PRIMARY KEY (order_id, line_id)
);

CREATE TABLE activities (
    id          INTEGER PRIMARY KEY,
    order_id    TEXT NOT NULL,
    event_id    TEXT,
    what        TEXT NOT NULL,
    channel     TEXT,
    device      TEXT,
    at          TEXT NOT NULL,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX activities_by_order ON activities(order_id, id);

CREATE TABLE dead_letters (
    id           INTEGER PRIMARY KEY,
    topic        TEXT NOT NULL,
    reason       TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    payload      BLOB NOT NULL,        -- cut to 4 KiB, as published
    payload_size INTEGER NOT NULL,
    digest       TEXT NOT NULL UNIQUE, -- sha256 of topic and full payload: a redelivery is kept once
    seen         INTEGER NOT NULL DEFAULT 1,
    published    INTEGER NOT NULL DEFAULT 0
);

-- One row per job_key: UNIQUE is what makes "printed once" a database fact.
CREATE TABLE print_jobs (
    job_key         TEXT PRIMARY KEY,
    order_id        TEXT NOT NULL,
    station_id      TEXT NOT NULL,
    kind            TEXT NOT NULL,      -- NEW | ADDED | VOID | HOLD | FIRE | CANCELLED | TEST
    change_ref      TEXT NOT NULL,      -- 'initial', batch_id, void:<hash>, hold:<n>, ...
    reprint_of      TEXT,               -- job_key this reprints, for REPRINT jobs
    line_ids        TEXT NOT NULL DEFAULT '[]',
    state           TEXT NOT NULL,      -- waiting | queued | sending | printed | failed | withdrawn
    wait_reason     TEXT,               -- held | scheduled | course
    not_before      TEXT,               -- scheduled/course jobs: earliest print time
    due_at          TEXT,               -- scheduled orders: when the food is due
    printer_id      TEXT,               -- printer the bytes went to last
    backup_from     TEXT,
    may_be_duplicate INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    reason          TEXT,              -- why it failed or was withdrawn
    note            TEXT,              -- printed on the ticket: void / cancel / hold reason
    created_at      TEXT NOT NULL,
    queued_at       TEXT,
    sent_at         TEXT,
    printed_at      TEXT,              -- rowid order is creation order: FIFO per station
    reported_state  TEXT               -- last state written to the outbox as a print_job record
);
CREATE INDEX print_jobs_by_state ON print_jobs(state, station_id, created_at);
CREATE INDEX print_jobs_by_order ON print_jobs(order_id);

CREATE TABLE commands (
    command_id   TEXT PRIMARY KEY,
    kind         TEXT NOT NULL,
    received_at  TEXT NOT NULL,
    payload      TEXT NOT NULL,
    result       TEXT NOT NULL
);

-- seq is the site-wide record order the upstream sees (CONTRACT section 7).
CREATE TABLE outbox (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id    TEXT NOT NULL UNIQUE,
    kind         TEXT NOT NULL,
    order_id     TEXT,
    created_at   TEXT NOT NULL,
    body         TEXT NOT NULL,
    size         INTEGER NOT NULL,
    state        TEXT NOT NULL DEFAULT 'pending',  -- pending | accepted | parked | superseded
    attempts     INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT,
    accepted_at  TEXT,
    parked_at    TEXT
);
CREATE INDEX outbox_pending ON outbox(state, seq);
CREATE INDEX outbox_by_order ON outbox(order_id, seq);

CREATE TABLE printer_registry (
    source       TEXT NOT NULL,   -- mdns | usb
    name         TEXT NOT NULL,   -- service name or usb VID:PID/SERIAL
    address      TEXT,
    port         INTEGER,
    details      TEXT NOT NULL DEFAULT '{}',
    first_seen   TEXT NOT NULL,
    last_seen    TEXT NOT NULL,
    present      INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (source, name)
);

CREATE TABLE printer_states (
    printer_id   TEXT PRIMARY KEY,
    state        TEXT NOT NULL,
    since        TEXT NOT NULL,
    detail       TEXT
);

CREATE TABLE kv (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

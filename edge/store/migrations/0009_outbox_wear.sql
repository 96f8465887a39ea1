-- Schema version 9 (issue 12, storage wear): the outbox's indexes hold only
-- the rows someone looks for. The full indexes (state, seq) and (order_id, seq) took every
-- record, accepted or not, and every change of state moved an entry; the UNIQUE on record_id
-- put every record, at a scattered place, into one more b-tree. Now the partial indexes hold
-- the unsent records (a few dozen while the upstream answers), the parked ones and the
-- confirmations, and accepted records, the bulk of the table, are in no index at all.
-- record_id stays unique: the kitchen builds ids that cannot repeat (a job's state and time,
-- a timeline's digest), and the one written per order, the confirmation, is held unique by
-- its own index (`INSERT OR IGNORE` relies on it).
CREATE TABLE outbox_next (
    seq          INTEGER PRIMARY KEY AUTOINCREMENT,
    record_id    TEXT NOT NULL,
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
INSERT INTO outbox_next (seq, record_id, kind, order_id, created_at, body, size, state,
                         attempts, last_error, accepted_at, parked_at)
    SELECT seq, record_id, kind, order_id, created_at, body, size, state, attempts,
           last_error, accepted_at, parked_at
    FROM outbox ORDER BY seq;
-- seq never goes back (CONTRACT section 7): the counter carries over, also past the newest
-- records if retention had already deleted them.
DELETE FROM sqlite_sequence WHERE name = 'outbox_next';
INSERT INTO sqlite_sequence (name, seq)
    SELECT 'outbox_next', MAX(COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0),
                              COALESCE((SELECT MAX(seq) FROM outbox_next), 0));
DROP TABLE outbox;
ALTER TABLE outbox_next RENAME TO outbox;
-- The sender's scan: unsent records in seq order, with their order (read from the index
-- alone, so skipping the records of orders in flight costs no row reads).
CREATE INDEX outbox_unsent ON outbox(seq, order_id) WHERE state = 'pending';
-- Superseding: an order's unsent records.
CREATE INDEX outbox_unsent_by_order ON outbox(order_id, seq) WHERE state = 'pending';
-- Parked records hold their order back (none while all is well: an empty index).
CREATE INDEX outbox_parked ON outbox(order_id, seq) WHERE state = 'parked';
-- Confirmations: written once (the unique id), and the timeline's "Confirmation recorded"
-- evidence, found by order; kept after retention.
CREATE UNIQUE INDEX outbox_confirmations ON outbox(order_id, record_id)
    WHERE kind = 'confirmation';

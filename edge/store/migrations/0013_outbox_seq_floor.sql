-- Schema version 13 (issue 12, storage wear): the outbox's seq without AUTOINCREMENT.
-- AUTOINCREMENT rewrote sqlite_sequence's page in every transaction that wrote a record:
-- about two WAL pages per order. What it guarded against, a seq given again after the
-- newest records were deleted (CONTRACT section 7: seq is never reused), is now held by
-- `outbox_seq_floor`: the highest seq ever deleted, kept by a trigger on the deletes (which
-- are rare: retention, the disk budget), and `edge.store.outbox.add_record` gives
-- MAX(the highest seq in the table, the floor) + 1. The table is rebuilt with its rows,
-- states and indexes as they were.
CREATE TABLE outbox_seq_floor (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL
);
INSERT INTO outbox_seq_floor (id, seq)
    SELECT 1, COALESCE((SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0);
CREATE TABLE outbox_next (
    seq          INTEGER PRIMARY KEY,
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
DROP TABLE outbox;
DELETE FROM sqlite_sequence WHERE name IN ('outbox', 'outbox_next');
ALTER TABLE outbox_next RENAME TO outbox;
CREATE INDEX outbox_unsent ON outbox(seq, order_id) WHERE state = 'pending';
CREATE INDEX outbox_unsent_by_order ON outbox(order_id, seq) WHERE state = 'pending';
CREATE INDEX outbox_parked ON outbox(order_id, seq) WHERE state = 'parked';
CREATE UNIQUE INDEX outbox_confirmations ON outbox(order_id, record_id)
    WHERE kind = 'confirmation';
-- Only a delete of the newest row can lower MAX(seq); the floor keeps it from going back.
-- The trigger's work is done for that row alone (the rows below it leave MAX(seq) be).
CREATE TRIGGER outbox_seq_floor AFTER DELETE ON outbox
    WHEN OLD.seq > COALESCE((SELECT MAX(seq) FROM outbox), 0)
     AND OLD.seq > (SELECT seq FROM outbox_seq_floor WHERE id = 1)
BEGIN
    UPDATE outbox_seq_floor SET seq = OLD.seq WHERE id = 1;
END;

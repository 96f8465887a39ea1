-- Schema version 9 (planned as 0011; issue 12, storage wear): the outbox's indexes hold only
-- the rows the sender looks for. The two full indexes (state, seq) and (order_id, seq) took
-- every record, accepted or not, and every change of state moved an entry; these partial
-- indexes hold the unsent records (a few dozen while the upstream answers), so inserting,
-- accepting and superseding touch one small index page each, and accepted records, the
-- bulk of the table, sit in no index but the record_id one.
DROP INDEX outbox_pending;
DROP INDEX outbox_by_order;
-- The sender's scan: unsent records in seq order, with their order (read from the index
-- alone, so skipping the records of orders in flight costs no row reads).
CREATE INDEX outbox_unsent ON outbox(seq, order_id) WHERE state = 'pending';
-- Superseding: an order's unsent records.
CREATE INDEX outbox_unsent_by_order ON outbox(order_id, seq) WHERE state = 'pending';
-- Parked records hold their order back (none while all is well: an empty index).
CREATE INDEX outbox_parked ON outbox(order_id, seq) WHERE state = 'parked';
-- The timeline's "Confirmation recorded" evidence: one row per order, kept after retention.
CREATE INDEX outbox_confirmations ON outbox(order_id, seq) WHERE kind = 'confirmation';

-- Schema version 4: orders a channel sends for the restaurant to accept or reject (seeds 001,
-- 004). Their tickets wait (print_jobs.wait_reason 'acceptance') until order.accepted.
ALTER TABLE orders ADD COLUMN requires_acceptance INTEGER NOT NULL DEFAULT 0;
-- When the kitchen was reminded (the ATTENTION ticket), so it is reminded once.
ALTER TABLE orders ADD COLUMN attention_at TEXT;
CREATE INDEX orders_awaiting ON orders(created_at)
    WHERE requires_acceptance = 1 AND kitchen_stage = 'received';

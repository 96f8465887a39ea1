-- Schema version 12 (issue 12, storage wear): print_jobs_by_state (state, station_id,
-- created_at) moved an entry on every job state change, to a leaf of its own among all the
-- printed jobs of the retention window: about five WAL pages per order. Every query that
-- looks a job up by state asks for a state a job only passes through (queued: the claim
-- queue, print_jobs_queue since version 11; unconfirmed: print_jobs_unconfirmed since 2;
-- sending and waiting: the partial indexes here), so an index over the settled jobs
-- (printed, withdrawn, failed) served no query but the metrics' count by state, which now
-- reads the table (once per scrape, the retention window's jobs).
DROP INDEX print_jobs_by_state;
-- Jobs whose bytes are going out: recovery after a crash puts them back, and a printer's
-- published state counts them with the queued ones.
CREATE INDEX print_jobs_sending ON print_jobs(station_id) WHERE state = 'sending';
-- Jobs held back (scheduled, held, a later course): the scheduler asks for the next due.
CREATE INDEX print_jobs_waiting ON print_jobs(wait_reason, not_before) WHERE state = 'waiting';

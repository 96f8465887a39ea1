-- Schema version 2: printing once when the printer misbehaves (docs/architecture.md,
-- "What a printer may hold"). print_jobs.state gains 'unconfirmed': bytes of the ticket may be
-- in printer `printer_id` (written, then no confirmation: paper ran out under it, the
-- connection dropped, the printer stopped reading).

-- Printers that may hold, or have printed, the job's bytes (JSON list of printer ids). The
-- spooler never sends the job to one of them again; only an operator's reprint (a new job)
-- can. A crash while `sending` is the exception: see edge/printing/jobs.py.
ALTER TABLE print_jobs ADD COLUMN delivered_to TEXT NOT NULL DEFAULT '[]';
-- When the job last became unconfirmed.
ALTER TABLE print_jobs ADD COLUMN unconfirmed_at TEXT;
CREATE INDEX print_jobs_unconfirmed ON print_jobs(printer_id) WHERE state = 'unconfirmed';

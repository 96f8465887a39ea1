-- Schema version 5: the kitchen display's own state (CONTRACT section 12). The tickets are
-- print_jobs; what the screens add is when each cooking ticket reached the kitchen (the
-- card's timer, which a recall never restarts) and the stations' bumps.

-- A cooking ticket (NEW, ADDED, a later course's FIRE) as a card: written in the
-- transaction in which its job first became printable, once.
CREATE TABLE kds_tickets (
    job_key      TEXT PRIMARY KEY,
    order_id     TEXT NOT NULL,
    station_id   TEXT NOT NULL,
    line_ids     TEXT NOT NULL,     -- JSON: the lines as the kitchen first saw them (a void
                                    -- strikes them through on the card, never hides them)
    shown_at     TEXT NOT NULL,     -- when it reached the kitchen: the timer starts here, always
    bumped_at    TEXT,              -- the station's current bump; NULL while the card is open
    closed_at    TEXT               -- the order left the kitchen (out for delivery, completed)
);
CREATE INDEX kds_tickets_open ON kds_tickets(station_id, shown_at)
    WHERE bumped_at IS NULL AND closed_at IS NULL;
CREATE INDEX kds_tickets_by_order ON kds_tickets(order_id);

-- Every bump, so that "recall" brings back the station's last one, then the one before.
CREATE TABLE kds_bumps (
    id           INTEGER PRIMARY KEY,
    station_id   TEXT NOT NULL,
    job_key      TEXT NOT NULL,
    order_id     TEXT NOT NULL,
    bumped_at    TEXT NOT NULL,
    recalled_at  TEXT
);
CREATE INDEX kds_bumps_last ON kds_bumps(station_id, id) WHERE recalled_at IS NULL;

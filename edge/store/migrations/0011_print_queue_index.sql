-- Schema version 11 (issue 17): the spooler's queue in claim order. A claim takes the oldest
-- queued job of a station (rowid order); with only print_jobs_by_state (which ends in
-- created_at) every claim sorted every queued job of its stations, so a kitchen that fell
-- behind caught up ever more slowly. Partial: only queued jobs are in it, and the rowid
-- every index entry ends with gives the order.
CREATE INDEX print_jobs_queue ON print_jobs(station_id) WHERE state = 'queued';

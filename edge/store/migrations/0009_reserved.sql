-- Schema version 9: reserved, no change. Another branch (storage wear) ships the real 0009;
-- this placeholder only keeps the sequence whole on the retention branch. Drop it at merge.
SELECT 1;

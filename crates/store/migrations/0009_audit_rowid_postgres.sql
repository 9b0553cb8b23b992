-- PostgreSQL keeps `audit_entries` and `audit_head` as 0003 made them: a BIGINT primary key is
-- its ordinary B-tree there. The SQLite file of this version rebuilds both tables so that their
-- keys are SQLite's rowid; this version only keeps the two databases' schema versions equal.

SELECT 1;

-- Jobs owned by exactly one process at a time (DATABASE_URL: several processes on one PostgreSQL).
-- Dispatch, tracking and delivery act only on jobs whose lease they hold; the loop renews its
-- leases every pass, and a process that dies stops renewing, so after `lease_until` another one
-- takes its jobs over with the restart rules (bot/store/jobs.py claim_jobs). On SQLite one process
-- owns the file and every job: the columns stay empty.
ALTER TABLE jobs ADD COLUMN lease_owner TEXT;
ALTER TABLE jobs ADD COLUMN lease_until REAL;
CREATE INDEX jobs_lease ON jobs (lease_owner, lease_until);

-- ../0006_status_changes.sql on PostgreSQL: the same status_seq stamp, by a plpgsql trigger.
-- Several processes write at once here, so the stamp takes a transaction-scoped advisory lock
-- first: stamps are then handed out in commit order, and the delivery loop reading
-- `status_seq > <the last it saw>` still misses nothing.
ALTER TABLE jobs ADD COLUMN status_seq BIGINT NOT NULL DEFAULT 0;
CREATE INDEX jobs_status_seq ON jobs (status_seq);

CREATE FUNCTION jobs_stamp_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(212526006);  -- 'castbot status_seq'
    UPDATE jobs SET status_seq = (SELECT COALESCE(MAX(status_seq), 0) FROM jobs) + 1 WHERE id = NEW.id;
    RETURN NULL;
END;
$$;
CREATE TRIGGER jobs_status_changed AFTER UPDATE OF state, progress, status_message_id ON jobs
FOR EACH ROW WHEN (NEW.status_message_id IS NOT NULL AND (
    NEW.state IS DISTINCT FROM OLD.state
    OR NEW.progress / 25 IS DISTINCT FROM OLD.progress / 25
    OR OLD.status_message_id IS NULL
))
EXECUTE FUNCTION jobs_stamp_status();

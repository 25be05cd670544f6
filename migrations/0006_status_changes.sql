-- Which jobs' status messages have something new to show, in commit order (cogs/delivery.py).
--
-- The delivery loop used to read every active job with a status message on every pass (5,000
-- full rows at scale) to find the few whose message needed an edit. Instead, the write that
-- makes such a change stamps the job with `status_seq` = one more than the highest so far. Writes
-- are serialised (one writer, BEGIN IMMEDIATE), so the loop reads only `status_seq > <the last it
-- saw>` and misses nothing; a wall-clock watermark on updated_at could, because callers often
-- take `now` before their transaction waits for the writer.
--
-- Only what a member would see is stamped: a new state, progress crossing a 25 % step
-- (bot/store/jobs.py PROGRESS_STEP), or the status message being recorded after the job moved.
-- Jobs without a status message (and every polling pass that changes nothing visible) cost nothing.
ALTER TABLE jobs ADD COLUMN status_seq INTEGER NOT NULL DEFAULT 0;
CREATE INDEX jobs_status_seq ON jobs (status_seq);
CREATE TRIGGER jobs_status_changed AFTER UPDATE OF state, progress, status_message_id ON jobs
WHEN NEW.status_message_id IS NOT NULL AND (
    NEW.state IS NOT OLD.state
    OR NEW.progress / 25 IS NOT OLD.progress / 25
    OR OLD.status_message_id IS NULL
)
BEGIN
    UPDATE jobs SET status_seq = (SELECT MAX(status_seq) FROM jobs) + 1 WHERE id = NEW.id;
END;

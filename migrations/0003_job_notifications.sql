-- When the final message about a job (the video, or why there is none) was posted or given up on.
-- NULL on a finished job means the delivery loop still owes the member that message.
ALTER TABLE jobs ADD COLUMN notified_at REAL;
CREATE INDEX jobs_unnotified ON jobs (state, next_poll_at)
    WHERE notified_at IS NULL AND state IN ('succeeded', 'rejected', 'failed', 'canceled');

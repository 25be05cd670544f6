-- Indexes the delivery loop and admission can actually use (figures: bench/README.md).
--
-- The store passes job states as bound parameters (`state IN (?, ?, ...)`). SQLite uses a partial
-- index only when the query's WHERE visibly implies the index's, and it does no algebra on IN
-- lists, so jobs_open and jobs_unnotified never served a query: every pass of the loop scanned
-- the whole jobs table (five times), and admission counted a guild's active jobs by reading all
-- of its jobs ever. With 85,000 jobs of history that was ~90 ms of SQLite per loop pass and up to
-- 100 ms inside each admission's write transaction. Plain indexes keep both flat.
DROP INDEX jobs_open;
DROP INDEX jobs_unnotified;
-- due jobs by state (dispatch, polling, status edits)
CREATE INDEX jobs_state_due ON jobs (state, next_poll_at);
-- finished jobs whose final message is still owed, and the loop's next wake-up
CREATE INDEX jobs_unnotified_due ON jobs (notified_at, state, next_poll_at);
-- active jobs of a guild and of a member (admission caps)
CREATE INDEX jobs_guild_active ON jobs (guild_id, state, user_id);

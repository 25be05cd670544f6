-- Storage that never fills the disk (bot/services/storage.py): the janitor deletes finished
-- videos after VIDEO_RETENTION_DAYS, or oldest first when DATA_DIR passes DATA_MAX_GB, and the
-- files of soft-deleted characters after the retention. It records each deletion so that
-- /character extract can say the video is no longer kept, and never looks at those files again.

-- When the janitor deleted the job's video (and its fitted copy); NULL: kept, or never made.
ALTER TABLE jobs ADD COLUMN result_purged_at REAL;
-- When the janitor deleted a soft-deleted character's clip (unless shared) and frames.
ALTER TABLE characters ADD COLUMN files_purged_at REAL;

-- The janitor's candidates: delivered videos by age, deleted characters by age.
CREATE INDEX jobs_kept_videos ON jobs (notified_at) WHERE result_path IS NOT NULL AND result_purged_at IS NULL;
CREATE INDEX characters_deleted_files ON characters (deleted_at) WHERE deleted_at IS NOT NULL AND files_purged_at IS NULL;

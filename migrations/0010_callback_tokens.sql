-- Webhooks as wake-ups (bot/services/webhooks.py): when PUBLIC_URL is set, each submission to a
-- provider that calls back carries /hooks/<provider>/<token>. The token is made per attempt and
-- written here before the call; a verified callback finds its job by it and only moves the job's
-- next status check to now. A later attempt replaces it, so an older attempt's token finds nothing.
ALTER TABLE jobs ADD COLUMN callback_token TEXT;
CREATE UNIQUE INDEX jobs_callback_token ON jobs (callback_token) WHERE callback_token IS NOT NULL;

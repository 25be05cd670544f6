-- The provider's own link to a finished video, when it gave one: the best thing to offer a member
-- when the file is too large to attach in their server.
ALTER TABLE jobs ADD COLUMN result_url TEXT;

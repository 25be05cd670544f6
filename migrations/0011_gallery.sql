-- The community gallery (/character browse, /character edit): tags a public card shows and
-- search matches, beside the name and description.
ALTER TABLE characters ADD COLUMN tags TEXT NOT NULL DEFAULT '';

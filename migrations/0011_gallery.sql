-- The community gallery (/character browse, /character edit): tags a public card shows and
-- search matches, beside the name and description.
ALTER TABLE characters ADD COLUMN tags TEXT NOT NULL DEFAULT '';

-- Full-text search over every character's name, description and tags (the gallery query keeps
-- only the public, live ones). External content: the text lives once, in `characters`; the
-- triggers below keep the index in step. remove_diacritics 2 folds "Zoë" and "Zoe" together,
-- unicode61 folds case. Prefix indexes of 2 and 3 letters: a member types the start of a word.
CREATE VIRTUAL TABLE character_search USING fts5(
    name, description, tags,
    content = 'characters', content_rowid = 'id',
    tokenize = "unicode61 remove_diacritics 2",
    prefix = '2 3'
);
INSERT INTO character_search (rowid, name, description, tags) SELECT id, name, description, tags FROM characters;

CREATE TRIGGER character_search_insert AFTER INSERT ON characters BEGIN
    INSERT INTO character_search (rowid, name, description, tags) VALUES (NEW.id, NEW.name, NEW.description, NEW.tags);
END;
CREATE TRIGGER character_search_update AFTER UPDATE OF name, description, tags ON characters BEGIN
    INSERT INTO character_search (character_search, rowid, name, description, tags)
    VALUES ('delete', OLD.id, OLD.name, OLD.description, OLD.tags);
    INSERT INTO character_search (rowid, name, description, tags) VALUES (NEW.id, NEW.name, NEW.description, NEW.tags);
END;
CREATE TRIGGER character_search_delete AFTER DELETE ON characters BEGIN
    INSERT INTO character_search (character_search, rowid, name, description, tags)
    VALUES ('delete', OLD.id, OLD.name, OLD.description, OLD.tags);
END;

-- "Used in N videos across M servers": one row per character and guild that made a job with
-- it, counted when the job is inserted (admission), so the count needs no scan of the jobs.
CREATE TABLE character_usage (
    character_id INTEGER NOT NULL REFERENCES characters (id),
    guild_id     INTEGER NOT NULL,
    videos       INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (character_id, guild_id)
) WITHOUT ROWID;
INSERT INTO character_usage (character_id, guild_id, videos)
SELECT ch.id, jobs.guild_id, COUNT(DISTINCT jobs.id)
FROM jobs, json_each(jobs.request_json, '$.characters') c
JOIN characters ch ON ch.id = json_extract(c.value, '$.id')
GROUP BY 1, 2;

-- Only characters that exist: a job naming anything else must still be admitted.
CREATE TRIGGER character_usage_count AFTER INSERT ON jobs BEGIN
    INSERT INTO character_usage (character_id, guild_id, videos)
    SELECT DISTINCT ch.id, NEW.guild_id, 1
    FROM json_each(NEW.request_json, '$.characters') c
    JOIN characters ch ON ch.id = json_extract(c.value, '$.id')
    WHERE true
    ON CONFLICT (character_id, guild_id) DO UPDATE SET videos = videos + 1;
END;

-- The gallery's orders without a sort of every public character: most used, newest, by name.
-- (`uses` is the per-character video count /generate keeps; hidden or taken-down cards are
-- filtered while walking these.)
CREATE INDEX characters_gallery_popular ON characters (uses DESC, id DESC)
    WHERE visibility = 'public' AND deleted_at IS NULL;
CREATE INDEX characters_gallery_newest ON characters (created_at DESC, id DESC)
    WHERE visibility = 'public' AND deleted_at IS NULL;
CREATE INDEX characters_gallery_name ON characters (name_key, id)
    WHERE visibility = 'public' AND deleted_at IS NULL;

-- A character's clip and frames replaced by /character edit: kept until no open job names the
-- character, then deleted by the storage janitor (bot/services/storage.py), which sets purged_at.
CREATE TABLE character_retired_files (
    id           INTEGER PRIMARY KEY,
    character_id INTEGER NOT NULL REFERENCES characters (id),
    clip_sha256  TEXT NOT NULL,
    clip_path    TEXT NOT NULL,
    frame_paths  TEXT NOT NULL,                        -- JSON array, relative to DATA_DIR
    retired_at   REAL NOT NULL,
    purged_at    REAL
);
CREATE INDEX character_retired_files_kept ON character_retired_files (retired_at) WHERE purged_at IS NULL;

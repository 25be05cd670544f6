-- ../0011_gallery.sql on PostgreSQL: the same tags, usage counts, gallery indexes and retired
-- files; search by a tsvector column instead of SQLite's FTS5 table.
ALTER TABLE characters ADD COLUMN tags TEXT NOT NULL DEFAULT '';

-- Search folds accents with the `unaccent` extension (PostgreSQL's contrib package, in the official
-- images; trusted since PostgreSQL 13, so the database's owner may create it without a superuser).
DO $$
BEGIN
    CREATE EXTENSION IF NOT EXISTS unaccent;
EXCEPTION WHEN OTHERS THEN
    RAISE EXCEPTION 'the gallery search needs the PostgreSQL extension "unaccent" (contrib): %. Install '
        'PostgreSQL''s contrib package, or have a superuser or the database''s owner run CREATE EXTENSION '
        'unaccent in this database, then start Castbot again', SQLERRM;
END;
$$;

-- castbot_search_text(): what search compares, as FTS5's "unicode61 remove_diacritics 2" sees it:
-- accents removed (unaccent), every run of characters that are not letters or digits a single
-- space, lower case. IMMUTABLE (unaccent itself is only STABLE: its dictionary could change), so a
-- generated column may use it; the dictionary is named with its schema so search_path cannot
-- change what it means. Letters and case are judged by ICU where the server has it (any script,
-- whatever the database's locale), else by the database's locale.
DO $$
DECLARE
    ext_schema TEXT;
    icu TEXT;
BEGIN
    SELECT quote_ident(n.nspname) INTO ext_schema
    FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent';
    icu := CASE WHEN EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')
                THEN ' COLLATE "und-x-icu"' ELSE '' END;
    EXECUTE format(
        'CREATE FUNCTION castbot_search_text(t TEXT) RETURNS TEXT LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE '
        'AS $f$ SELECT lower(regexp_replace(%s.unaccent(%L::regdictionary, t)%s, ''[^[:alnum:]]+'', '' '', ''g'')) $f$',
        ext_schema, ext_schema || '.unaccent', icu
    );
END;
$$;

-- Each word of the tags once more, marked with '#' (which castbot_search_text never leaves in a
-- word): a `#tag` search finds its rows in the GIN index itself, where a weight alone (C) would
-- have it recheck every row whose description holds the word too (23 ms a page for a common tag).
-- (SET search_path: castbot_search_text is found whatever the caller's path, as when pg_restore
-- computes the generated column with an empty one)
CREATE FUNCTION castbot_tag_lexemes(tags TEXT) RETURNS tsvector LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT AS $$
    SELECT array_to_tsvector(COALESCE(array_agg(DISTINCT '#' || w), '{}'))
    FROM unnest(string_to_array(castbot_search_text(tags), ' ')) AS w
    WHERE w <> ''
$$;

-- Name (weight A), description (B) and tags (C, and marked: castbot_tag_lexemes).
ALTER TABLE characters ADD COLUMN search_words tsvector GENERATED ALWAYS AS (
    setweight(to_tsvector('simple'::regconfig, castbot_search_text(name)), 'A')
    || setweight(to_tsvector('simple'::regconfig, castbot_search_text(description)), 'B')
    || setweight(to_tsvector('simple'::regconfig, castbot_search_text(tags)), 'C')
    || castbot_tag_lexemes(tags)
) STORED;
-- Only the gallery searches: the public, live characters. fastupdate off: a new or edited
-- character goes into the index at once rather than into a pending list that every search would
-- read through until (auto)vacuum merges it (13 ms a page after a bulk insert, bench/README.md § 8);
-- characters are made at a human pace, so the dearer insert costs nothing that matters.
CREATE INDEX characters_gallery_search ON characters USING gin (search_words)
    WITH (fastupdate = off)
    WHERE visibility = 'public' AND deleted_at IS NULL;

-- What a member typed, already reduced by bot.store.gallery to words of letters, digits, '_' and
-- '-' separated by single spaces (a `#` before a tag-only word), as a tsquery: every word must
-- match; a word's pieces in order, its last one a prefix. A tag word's pieces are whole words of
-- the tags (the marked lexemes: castbot_tag_lexemes), in order there. Every piece is quoted, so
-- nothing typed is read as tsquery syntax. NULL when nothing is left.
CREATE FUNCTION castbot_search_query(typed TEXT) RETURNS tsquery LANGUAGE plpgsql IMMUTABLE STRICT PARALLEL SAFE
SET search_path FROM CURRENT AS $$
DECLARE
    word TEXT;
    tag BOOLEAN;
    pieces TEXT[];
    parts TEXT[] := '{}';
    phrase TEXT[];
    piece TEXT;
    i INT;
BEGIN
    FOREACH word IN ARRAY string_to_array(typed, ' ') LOOP
        tag := left(word, 1) = '#';
        pieces := string_to_array(btrim(castbot_search_text(ltrim(word, '#'))), ' ');
        CONTINUE WHEN pieces IS NULL OR cardinality(pieces) = 0 OR pieces[1] = '';
        phrase := '{}';
        FOR i IN 1 .. cardinality(pieces) LOOP
            -- letters and digits only, but quoted as tsquery quotes anyway
            piece := replace(replace(pieces[i], '\', '\\'), '''', '''''');
            IF tag THEN
                parts := parts || ('''#' || piece || '''');
                phrase := phrase || ('''' || piece || ''':C');
            ELSE
                phrase := phrase || ('''' || piece || '''' || CASE WHEN i = cardinality(pieces) THEN ':*' ELSE '' END);
            END IF;
        END LOOP;
        IF NOT tag OR cardinality(pieces) > 1 THEN
            parts := parts || ('(' || array_to_string(phrase, ' <-> ') || ')');
        END IF;
    END LOOP;
    IF cardinality(parts) = 0 THEN
        RETURN NULL;
    END IF;
    -- the pieces are folded already: read as written (to_tsquery would parse the '#' away)
    RETURN CAST(array_to_string(parts, ' & ') AS tsquery);
END;
$$;

-- "Used in N videos across M servers", counted as each job row is inserted.
CREATE TABLE character_usage (
    character_id BIGINT NOT NULL REFERENCES characters (id),
    guild_id     BIGINT NOT NULL,
    videos       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (character_id, guild_id)
);

-- The characters a job's request names, as ids (a malformed entry names nobody).
CREATE FUNCTION castbot_job_character_ids(request_json TEXT) RETURNS SETOF BIGINT LANGUAGE sql IMMUTABLE AS $$
    SELECT CAST(c ->> 'id' AS BIGINT)
    FROM jsonb_array_elements(
        CASE WHEN jsonb_typeof(CAST(request_json AS jsonb) -> 'characters') = 'array'
             THEN CAST(request_json AS jsonb) -> 'characters' END
    ) c
    WHERE jsonb_typeof(c) = 'object' AND c ->> 'id' ~ '^-?[0-9]{1,18}$'
$$;

INSERT INTO character_usage (character_id, guild_id, videos)
SELECT ch.id, jobs.guild_id, COUNT(DISTINCT jobs.id)
FROM jobs CROSS JOIN LATERAL castbot_job_character_ids(jobs.request_json) AS named (id)
JOIN characters ch ON ch.id = named.id
GROUP BY 1, 2;

-- Only characters that exist: a job naming anything else must still be admitted.
CREATE FUNCTION character_usage_count() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO character_usage (character_id, guild_id, videos)
    SELECT DISTINCT ch.id, NEW.guild_id, 1
    FROM castbot_job_character_ids(NEW.request_json) AS named (id)
    JOIN characters ch ON ch.id = named.id
    ON CONFLICT (character_id, guild_id) DO UPDATE SET videos = character_usage.videos + 1;
    RETURN NULL;
END;
$$;
CREATE TRIGGER character_usage_count AFTER INSERT ON jobs
    FOR EACH ROW EXECUTE FUNCTION character_usage_count();

-- The gallery's orders without a sort of every public character: most used, newest, by name.
CREATE INDEX characters_gallery_popular ON characters (uses DESC, id DESC)
    WHERE visibility = 'public' AND deleted_at IS NULL;
CREATE INDEX characters_gallery_newest ON characters (created_at DESC, id DESC)
    WHERE visibility = 'public' AND deleted_at IS NULL;
CREATE INDEX characters_gallery_name ON characters (name_key, id)
    WHERE visibility = 'public' AND deleted_at IS NULL;

-- A character's clip and frames replaced by /character edit, until the storage janitor deletes them.
CREATE TABLE character_retired_files (
    id           BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    character_id BIGINT NOT NULL REFERENCES characters (id),
    clip_sha256  TEXT NOT NULL,
    clip_path    TEXT NOT NULL,
    frame_paths  TEXT NOT NULL,                        -- JSON array, relative to DATA_DIR
    retired_at   DOUBLE PRECISION NOT NULL,
    purged_at    DOUBLE PRECISION
);
CREATE INDEX character_retired_files_kept ON character_retired_files (retired_at) WHERE purged_at IS NULL;

-- Trust around shared likenesses: a public card hidden after enough distinct reports (pending an
-- operator's review), and a character an operator took down (it stops working everywhere).
ALTER TABLE characters ADD COLUMN hidden_at REAL;
ALTER TABLE characters ADD COLUMN taken_down_at REAL;

-- Reports of a shared character. One row per character and reporter, so the threshold counts
-- distinct people; a second click by the same member changes nothing. Resolved by an operator's
-- takedown or restore.
CREATE TABLE character_reports (
    id           INTEGER PRIMARY KEY,
    character_id INTEGER NOT NULL REFERENCES characters (id),
    reporter_id  INTEGER NOT NULL,
    guild_id     INTEGER,                             -- where the Report button was clicked (NULL: a DM)
    job_id       INTEGER,                             -- the delivered video it was reported from, if any
    reason       TEXT NOT NULL CHECK (reason IN ('not_me', 'sexual', 'minor', 'hateful', 'other')),
    created_at   REAL NOT NULL,
    resolved_at  REAL,
    UNIQUE (character_id, reporter_id)
);
CREATE INDEX character_reports_open ON character_reports (character_id) WHERE resolved_at IS NULL;

-- The owner's confirmation that the person shown is them or agreed to be shown, each time a
-- character is made public (or `server` where the guild requires it).
CREATE TABLE character_consents (
    id           INTEGER PRIMARY KEY,
    character_id INTEGER NOT NULL REFERENCES characters (id),
    user_id      INTEGER NOT NULL,
    visibility   TEXT NOT NULL CHECK (visibility IN ('server', 'public')),
    created_at   REAL NOT NULL
);
CREATE INDEX character_consents_character ON character_consents (character_id);

-- Every operator command (takedown, restore, reading the reports), append-only like the ledger.
CREATE TABLE operator_audit (
    id           INTEGER PRIMARY KEY,
    operator_id  INTEGER NOT NULL,
    action       TEXT NOT NULL CHECK (action IN ('takedown', 'restore', 'reports')),
    character_id INTEGER REFERENCES characters (id),      -- NULL for `reports`
    guild_id     INTEGER,                             -- where the command was used (NULL: a DM)
    detail       TEXT NOT NULL DEFAULT '',
    created_at   REAL NOT NULL
);
CREATE TRIGGER operator_audit_append_only_update BEFORE UPDATE ON operator_audit
BEGIN
    SELECT RAISE(ABORT, 'operator_audit is append-only');
END;
CREATE TRIGGER operator_audit_append_only_delete BEFORE DELETE ON operator_audit
BEGIN
    SELECT RAISE(ABORT, 'operator_audit is append-only');
END;

-- A guild's moderators: whether members may import public characters here, where reports of
-- this guild's characters are posted, and whether `server` visibility needs the owner's consent.
ALTER TABLE guild_settings ADD COLUMN allow_imports INTEGER NOT NULL DEFAULT 1 CHECK (allow_imports IN (0, 1));
ALTER TABLE guild_settings ADD COLUMN report_channel_id INTEGER;
ALTER TABLE guild_settings ADD COLUMN require_consent INTEGER NOT NULL DEFAULT 0 CHECK (require_consent IN (0, 1));

-- An owner withdrew one server's import: that server cannot import the character again.
CREATE TABLE character_import_bans (
    character_id INTEGER NOT NULL REFERENCES characters (id),
    guild_id     INTEGER NOT NULL,
    banned_by    INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    PRIMARY KEY (character_id, guild_id)
);

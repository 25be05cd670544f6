-- Castbot schema v1. Money is integer micro-USD; times are UTC unix seconds (REAL);
-- Discord snowflakes are INTEGER. Every guild-owned row carries guild_id.

CREATE TABLE guild_settings (
    guild_id                  INTEGER PRIMARY KEY,
    moderator_role_id         INTEGER,
    timezone                  TEXT NOT NULL DEFAULT 'UTC',
    locale                    TEXT,                    -- NULL: Discord's guild_locale
    providers                 TEXT,                    -- comma list in preference order; NULL: instance default
    priority                  TEXT NOT NULL DEFAULT 'cost' CHECK (priority IN ('cost', 'stability')),
    fallback                  INTEGER NOT NULL DEFAULT 0 CHECK (fallback IN (0, 1)),
    monthly_limit_micros      INTEGER CHECK (monthly_limit_micros >= 0),   -- NULL: no budget set
    member_daily_limit_micros INTEGER CHECK (member_daily_limit_micros >= 0),
    max_active_per_member     INTEGER NOT NULL DEFAULT 2 CHECK (max_active_per_member > 0),
    max_active_per_guild      INTEGER NOT NULL DEFAULT 10 CHECK (max_active_per_guild > 0),
    created_at                REAL NOT NULL,
    updated_at                REAL NOT NULL
);

CREATE TABLE characters (
    id                INTEGER PRIMARY KEY,
    guild_id          INTEGER NOT NULL,
    owner_id          INTEGER NOT NULL,
    name              TEXT NOT NULL,
    name_key          TEXT NOT NULL,                      -- normalised, casefolded: uniqueness and lookup
    description       TEXT NOT NULL DEFAULT '',
    visibility        TEXT NOT NULL DEFAULT 'server' CHECK (visibility IN ('private', 'server', 'public')),
    share_code        TEXT UNIQUE,                        -- stable once issued, even if made private again
    clip_sha256       TEXT NOT NULL,
    clip_path         TEXT NOT NULL,
    clip_duration     REAL NOT NULL,
    best_window_start REAL NOT NULL DEFAULT 0,
    frame_paths       TEXT NOT NULL,                      -- JSON array; [0] is the frontal frame
    source_job_id     INTEGER,                            -- set when extracted from a finished video
    uses              INTEGER NOT NULL DEFAULT 0,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL,
    deleted_at        REAL
);
CREATE UNIQUE INDEX characters_live_name ON characters (guild_id, name_key) WHERE deleted_at IS NULL;
CREATE INDEX characters_owner ON characters (guild_id, owner_id);
CREATE INDEX characters_public ON characters (visibility, created_at) WHERE deleted_at IS NULL;

CREATE TABLE character_handles (
    character_id  INTEGER NOT NULL REFERENCES characters (id),
    provider      TEXT NOT NULL,
    state         TEXT NOT NULL CHECK (state IN ('ready', 'refused')),
    external_id   TEXT,
    mention_token TEXT,
    error         TEXT,
    created_at    REAL NOT NULL,
    PRIMARY KEY (character_id, provider)
);

CREATE TABLE character_imports (
    id           INTEGER PRIMARY KEY,
    guild_id     INTEGER NOT NULL,
    character_id INTEGER NOT NULL REFERENCES characters (id),
    alias        TEXT NOT NULL,
    alias_key    TEXT NOT NULL,
    imported_by  INTEGER NOT NULL,
    created_at   REAL NOT NULL,
    UNIQUE (guild_id, alias_key),
    UNIQUE (guild_id, character_id)
);

CREATE TABLE jobs (
    id                INTEGER PRIMARY KEY,
    interaction_id    INTEGER UNIQUE,                     -- a retried interaction is the same job
    guild_id          INTEGER NOT NULL,
    channel_id        INTEGER NOT NULL,
    user_id           INTEGER NOT NULL,
    locale            TEXT,
    prompt            TEXT NOT NULL,
    request_json      TEXT NOT NULL,                      -- resolved request: seconds, orientation, characters...
    providers         TEXT NOT NULL,                      -- the chain the hold covers, comma list
    provider          TEXT,                               -- the provider currently responsible
    external_id       TEXT,
    state             TEXT NOT NULL CHECK (state IN (
                          'held', 'submitting', 'queued', 'running', 'ambiguous', 'succeeded',
                          'delivered', 'rejected', 'failed', 'expired', 'canceled')),
    progress          INTEGER,
    estimate_micros   INTEGER NOT NULL CHECK (estimate_micros >= 0),
    cost_micros       INTEGER CHECK (cost_micros >= 0),
    global_period     TEXT NOT NULL,
    guild_period      TEXT NOT NULL,
    member_period     TEXT NOT NULL,
    error_code        TEXT,
    error             TEXT,
    next_poll_at      REAL,
    poll_failures     INTEGER NOT NULL DEFAULT 0,
    deadline_at       REAL,
    status_message_id INTEGER,
    result_message_id INTEGER,
    result_path       TEXT,
    result_sha256     TEXT,
    result_size       INTEGER,
    version           INTEGER NOT NULL DEFAULT 0,
    created_at        REAL NOT NULL,
    updated_at        REAL NOT NULL
);
CREATE INDEX jobs_open ON jobs (state, next_poll_at)
    WHERE state IN ('held', 'submitting', 'queued', 'running', 'ambiguous', 'succeeded', 'expired');
CREATE INDEX jobs_user ON jobs (guild_id, user_id, created_at);

CREATE TABLE attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id),
    n           INTEGER NOT NULL,
    provider    TEXT NOT NULL,
    client_ref  TEXT NOT NULL UNIQUE,
    state       TEXT NOT NULL CHECK (state IN ('sending', 'accepted', 'not_sent', 'rejected', 'ambiguous')),
    external_id TEXT,
    error_class TEXT,
    error       TEXT,
    started_at  REAL NOT NULL,
    finished_at REAL,
    PRIMARY KEY (job_id, n)
);

CREATE TABLE budget_counters (
    scope         TEXT NOT NULL CHECK (scope IN ('global', 'guild', 'member')),
    scope_id      TEXT NOT NULL,                          -- '' | guild_id | guild_id:user_id
    period_key    TEXT NOT NULL,                          -- '2026-11' or '2026-11-22'
    limit_micros  INTEGER CHECK (limit_micros >= 0),      -- NULL: unlimited
    held_micros   INTEGER NOT NULL DEFAULT 0 CHECK (held_micros >= 0),
    spent_micros  INTEGER NOT NULL DEFAULT 0 CHECK (spent_micros >= 0),
    overrun_micros INTEGER NOT NULL DEFAULT 0 CHECK (overrun_micros >= 0),
    PRIMARY KEY (scope, scope_id, period_key)
);

CREATE TABLE ledger (
    id            INTEGER PRIMARY KEY,
    job_id        INTEGER NOT NULL REFERENCES jobs (id),
    kind          TEXT NOT NULL CHECK (kind IN ('hold', 'capture', 'release', 'overrun')),
    amount_micros INTEGER NOT NULL CHECK (amount_micros >= 0),
    reason        TEXT,
    created_at    REAL NOT NULL,
    UNIQUE (job_id, kind)                                 -- no second capture or release, ever
);

CREATE TRIGGER ledger_append_only_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;
CREATE TRIGGER ledger_append_only_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'ledger is append-only');
END;

CREATE TABLE provider_health (
    provider        TEXT PRIMARY KEY,
    state           TEXT NOT NULL DEFAULT 'closed' CHECK (state IN ('closed', 'open', 'half_open', 'disabled')),
    open_until      REAL,
    open_count      INTEGER NOT NULL DEFAULT 0,
    probe_job_id    INTEGER,
    disabled_reason TEXT,
    updated_at      REAL NOT NULL
);

CREATE TABLE provider_events (
    id       INTEGER PRIMARY KEY,
    provider TEXT NOT NULL,
    at       REAL NOT NULL,
    phase    TEXT NOT NULL CHECK (phase IN ('submit', 'poll', 'outcome')),
    ok       INTEGER NOT NULL CHECK (ok IN (0, 1)),
    detail   TEXT
);
CREATE INDEX provider_events_recent ON provider_events (provider, at);

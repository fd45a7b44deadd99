-- The first schema of a tenant shard. Times are INTEGER Unix microseconds
-- (UTC); JSON documents are TEXT. Every backend's 0001 holds the same tables.

CREATE TABLE users (
    id                  TEXT PRIMARY KEY,
    aud                 TEXT NOT NULL DEFAULT 'authenticated',
    role                TEXT NOT NULL DEFAULT 'authenticated',
    email               TEXT UNIQUE,
    phone               TEXT UNIQUE,
    encrypted_password  TEXT NOT NULL DEFAULT '',
    email_confirmed_at  INTEGER,
    phone_confirmed_at  INTEGER,
    last_sign_in_at     INTEGER,
    last_seen_at        INTEGER,
    raw_app_meta_data   TEXT NOT NULL DEFAULT '{}',
    raw_user_meta_data  TEXT NOT NULL DEFAULT '{}',
    banned_until        INTEGER,
    is_anonymous        INTEGER NOT NULL DEFAULT 0,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    deleted_at          INTEGER
);

CREATE TABLE identities (
    id               TEXT PRIMARY KEY,
    user_id          TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    provider         TEXT NOT NULL,
    provider_id      TEXT NOT NULL,
    identity_data    TEXT NOT NULL DEFAULT '{}',
    email            TEXT,
    last_sign_in_at  INTEGER,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (provider, provider_id)
);
CREATE INDEX identities_user_id ON identities(user_id);

CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    aal           TEXT NOT NULL DEFAULT 'aal1',
    user_agent    TEXT,
    ip            TEXT,
    not_after     INTEGER,
    refreshed_at  INTEGER,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL
);
CREATE INDEX sessions_user_id ON sessions(user_id);

CREATE TABLE refresh_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  TEXT NOT NULL UNIQUE,
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    parent      TEXT,
    revoked     INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX refresh_tokens_session_id ON refresh_tokens(session_id);
CREATE INDEX refresh_tokens_parent ON refresh_tokens(parent);

CREATE TABLE audit_log (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    action      TEXT NOT NULL,
    actor_id    TEXT,
    actor_email TEXT,
    ip          TEXT,
    payload     TEXT NOT NULL DEFAULT '{}',
    created_at  INTEGER NOT NULL
);
CREATE INDEX audit_log_created_at ON audit_log(created_at);

CREATE TABLE signing_keys (
    kid          TEXT PRIMARY KEY,
    algorithm    TEXT NOT NULL,
    public_key   BLOB NOT NULL,
    private_key  BLOB NOT NULL, -- encrypted with the server master key
    active       INTEGER NOT NULL DEFAULT 0,
    created_at   INTEGER NOT NULL,
    retired_at   INTEGER
);

CREATE TABLE settings (
    key    TEXT PRIMARY KEY,
    value  TEXT NOT NULL
);

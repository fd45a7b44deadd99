-- Every tenant an OAuth 2.0 / OpenID Connect provider. A grant a client
-- holds for a user is a session (sessions, refresh_tokens: the same
-- rotation and reuse detection as GoTrue's refresh) with an oauth_grants
-- row naming the client and its scopes; the hosted pages' browser cookie is
-- a session too, with an oauth_browser_sessions row. Codes, secrets and
-- cookies are stored as SHA-256 hashes.

CREATE TABLE oauth_clients (
    id                          TEXT PRIMARY KEY,
    name                        TEXT NOT NULL,
    client_type                 TEXT NOT NULL,          -- confidential | public
    token_endpoint_auth_method  TEXT NOT NULL,          -- client_secret_basic | client_secret_post | none
    secret_hash                 TEXT NOT NULL DEFAULT '',
    redirect_uris               TEXT NOT NULL DEFAULT '[]',
    post_logout_redirect_uris   TEXT NOT NULL DEFAULT '[]',
    grant_types                 TEXT NOT NULL DEFAULT '[]',
    scopes                      TEXT NOT NULL DEFAULT '[]',
    skip_consent                INTEGER NOT NULL DEFAULT 0,
    logo_uri                    TEXT,
    client_uri                  TEXT,
    registration_type           TEXT NOT NULL DEFAULT 'manual', -- manual | dynamic
    created_at                  INTEGER NOT NULL,
    updated_at                  INTEGER NOT NULL
);

CREATE TABLE oauth_consents (
    user_id     TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL,
    PRIMARY KEY (user_id, client_id)
);

CREATE TABLE oauth_grants (
    session_id  TEXT PRIMARY KEY REFERENCES sessions(id) ON DELETE CASCADE,
    client_id   TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    auth_time   INTEGER NOT NULL,
    amr         TEXT NOT NULL DEFAULT '[]',
    created_at  INTEGER NOT NULL
);
CREATE INDEX oauth_grants_client_id ON oauth_grants(client_id);

CREATE TABLE oauth_browser_sessions (
    token_hash  TEXT PRIMARY KEY,
    session_id  TEXT NOT NULL REFERENCES sessions(id) ON DELETE CASCADE,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX oauth_browser_sessions_session_id ON oauth_browser_sessions(session_id);

CREATE TABLE oauth_auth_requests (
    id          TEXT PRIMARY KEY,
    client_id   TEXT NOT NULL,
    request     TEXT NOT NULL,          -- JSON: redirect_uri, scopes, state, nonce, PKCE, ...
    user_id     TEXT,
    auth_time   INTEGER,
    amr         TEXT NOT NULL DEFAULT '[]',
    done        INTEGER NOT NULL DEFAULT 0,
    code_hash   TEXT UNIQUE,
    session_id  TEXT,                   -- the grant its code was exchanged for
    used_at     INTEGER,
    expires_at  INTEGER NOT NULL,
    created_at  INTEGER NOT NULL
);
CREATE INDEX oauth_auth_requests_expires_at ON oauth_auth_requests(expires_at);

CREATE TABLE oauth_device_codes (
    device_code_hash  TEXT PRIMARY KEY,
    user_code         TEXT NOT NULL UNIQUE,
    client_id         TEXT NOT NULL,
    scopes            TEXT NOT NULL,
    state             TEXT NOT NULL DEFAULT 'pending', -- pending | approved | denied | used
    user_id           TEXT,
    auth_time         INTEGER,
    amr               TEXT NOT NULL DEFAULT '[]',
    interval_s        INTEGER NOT NULL,
    last_poll_at      INTEGER,
    expires_at        INTEGER NOT NULL,
    created_at        INTEGER NOT NULL
);
CREATE INDEX oauth_device_codes_expires_at ON oauth_device_codes(expires_at);

CREATE TABLE oauth_revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);

-- PostgreSQL dialect of sqlite/0006_providers.sql (see there).

CREATE TABLE identity_providers (
    id                 TEXT PRIMARY KEY,      -- as /authorize?provider=<id> names it
    kind               TEXT NOT NULL,         -- oidc, oauth2, or a preset (google, github, …)
    issuer             TEXT NOT NULL DEFAULT '',
    client_id          TEXT NOT NULL,
    client_secret      BYTEA,                  -- sealed
    scopes             TEXT NOT NULL DEFAULT '[]',
    authorization_url  TEXT NOT NULL DEFAULT '',
    token_url          TEXT NOT NULL DEFAULT '',
    userinfo_url       TEXT NOT NULL DEFAULT '',
    mapping            TEXT NOT NULL DEFAULT '{}', -- our field → the provider's claim
    enabled            BIGINT NOT NULL DEFAULT 1,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
);

CREATE TABLE upstream_states (
    id_hash         TEXT PRIMARY KEY,   -- SHA-256 of the state's random part
    provider_id     TEXT NOT NULL,
    redirect_to     TEXT NOT NULL DEFAULT '',
    code_verifier   TEXT NOT NULL,      -- our PKCE toward the provider
    nonce           TEXT NOT NULL,
    flow_state_id   TEXT,               -- the client's PKCE (auth-js flowType pkce)
    link_user_id    TEXT,               -- set when linking to a signed-in user
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX upstream_states_expires ON upstream_states(expires_at);

ALTER TABLE sessions ADD COLUMN amr TEXT;

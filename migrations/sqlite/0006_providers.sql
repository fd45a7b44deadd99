-- Upstream identity providers of a tenant (login through its Google,
-- GitHub, Entra, Okta or company OpenID provider) and the states of the
-- logins in flight. A provider's client secret is sealed (AES-256-GCM)
-- under the server master key, bound to the tenant and the provider.

CREATE TABLE identity_providers (
    id                 TEXT PRIMARY KEY,      -- as /authorize?provider=<id> names it
    kind               TEXT NOT NULL,         -- oidc, oauth2, or a preset (google, github, …)
    issuer             TEXT NOT NULL DEFAULT '',
    client_id          TEXT NOT NULL,
    client_secret      BLOB,                  -- sealed
    scopes             TEXT NOT NULL DEFAULT '[]',
    authorization_url  TEXT NOT NULL DEFAULT '',
    token_url          TEXT NOT NULL DEFAULT '',
    userinfo_url       TEXT NOT NULL DEFAULT '',
    mapping            TEXT NOT NULL DEFAULT '{}', -- our field → the provider's claim
    enabled            INTEGER NOT NULL DEFAULT 1,
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE upstream_states (
    id_hash         TEXT PRIMARY KEY,   -- SHA-256 of the state's random part
    provider_id     TEXT NOT NULL,
    redirect_to     TEXT NOT NULL DEFAULT '',
    code_verifier   TEXT NOT NULL,      -- our PKCE toward the provider
    nonce           TEXT NOT NULL,
    flow_state_id   TEXT,               -- the client's PKCE (auth-js flowType pkce)
    link_user_id    TEXT,               -- set when linking to a signed-in user
    expires_at      INTEGER NOT NULL,
    created_at      INTEGER NOT NULL
);
CREATE INDEX upstream_states_expires ON upstream_states(expires_at);

-- How a session was opened (its amr method) when not by password: a
-- refresh keeps it.
ALTER TABLE sessions ADD COLUMN amr TEXT;

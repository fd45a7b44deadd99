-- Email flows: the one-time tokens mailed links and codes carry, the PKCE
-- flow states of links that end in ?code=, and the user's mail state as
-- GoTrue names it (when each kind of mail was last sent, a pending email
-- change).
--
-- A token has two secrets: the link's token (random, 56 hex characters as
-- GoTrue's) and a 6-digit code. The row holds SHA-256 of each (with the
-- kind, and the address for the code): neither can be read back, and the
-- code, which could be walked, is only looked up by address under the
-- login throttle. A newer token of the same kind for the same user
-- replaces the older one.

CREATE TABLE one_time_tokens (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,    -- signup, invite, recovery, magiclink, email_change_current, email_change_new, reauthentication
    token_hash     TEXT NOT NULL UNIQUE,
    code_hash      TEXT NOT NULL,
    relates_to     TEXT NOT NULL,    -- the address the token was mailed to
    flow_state_id  TEXT,             -- a PKCE link's flow state
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX one_time_tokens_user_kind ON one_time_tokens(user_id, kind);
CREATE INDEX one_time_tokens_code ON one_time_tokens(code_hash);

CREATE TABLE flow_states (
    id                     TEXT PRIMARY KEY,
    user_id                TEXT,
    code_challenge         TEXT NOT NULL,
    code_challenge_method  TEXT NOT NULL,   -- s256 or plain
    authentication_method  TEXT NOT NULL,   -- what the link was: magiclink, recovery, signup, invite, email_change
    auth_code_hash         TEXT UNIQUE,     -- set when the link was followed
    auth_code_issued_at    INTEGER,
    created_at             INTEGER NOT NULL,
    expires_at             INTEGER NOT NULL
);

CREATE INDEX flow_states_expires ON flow_states(expires_at);

ALTER TABLE users ADD COLUMN confirmation_sent_at INTEGER;
ALTER TABLE users ADD COLUMN recovery_sent_at INTEGER;
ALTER TABLE users ADD COLUMN invited_at INTEGER;
ALTER TABLE users ADD COLUMN email_change TEXT;
ALTER TABLE users ADD COLUMN email_change_sent_at INTEGER;
ALTER TABLE users ADD COLUMN email_change_confirm_status INTEGER NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN reauthentication_sent_at INTEGER;
-- How the address was confirmed: autoconfirm (taken as typed), link (a
-- mailed link or code), admin, provider (an upstream provider verified
-- it). Only a proven address may have an upstream identity linked to it.
ALTER TABLE users ADD COLUMN email_confirmed_by TEXT;

-- PostgreSQL dialect of sqlite/0005_mail.sql (see there).

CREATE TABLE one_time_tokens (
    id             TEXT PRIMARY KEY,
    user_id        TEXT NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    kind           TEXT NOT NULL,
    token_hash     TEXT NOT NULL UNIQUE,
    code_hash      TEXT NOT NULL,
    relates_to     TEXT NOT NULL,
    flow_state_id  TEXT,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX one_time_tokens_user_kind ON one_time_tokens(user_id, kind);
CREATE INDEX one_time_tokens_code ON one_time_tokens(code_hash);

CREATE TABLE flow_states (
    id                     TEXT PRIMARY KEY,
    user_id                TEXT,
    code_challenge         TEXT NOT NULL,
    code_challenge_method  TEXT NOT NULL,
    authentication_method  TEXT NOT NULL,
    auth_code_hash         TEXT UNIQUE,
    auth_code_issued_at    BIGINT,
    created_at             BIGINT NOT NULL,
    expires_at             BIGINT NOT NULL
);

CREATE INDEX flow_states_expires ON flow_states(expires_at);

ALTER TABLE users
    ADD COLUMN confirmation_sent_at BIGINT,
    ADD COLUMN recovery_sent_at BIGINT,
    ADD COLUMN invited_at BIGINT,
    ADD COLUMN email_change TEXT,
    ADD COLUMN email_change_sent_at BIGINT,
    ADD COLUMN email_change_confirm_status BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reauthentication_sent_at BIGINT,
    ADD COLUMN email_confirmed_by TEXT;

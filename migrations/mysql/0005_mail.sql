-- MySQL/MariaDB dialect of sqlite/0005_mail.sql (see there). DDL commits
-- on its own here: the tables are created only if missing and the users
-- columns are one ALTER, last, so a migration cut short is either redone
-- whole or was already done.

CREATE TABLE IF NOT EXISTS one_time_tokens (
    id             VARCHAR(64) PRIMARY KEY,
    user_id        VARCHAR(64) NOT NULL,
    kind           VARCHAR(32) NOT NULL,
    token_hash     VARCHAR(128) NOT NULL UNIQUE,
    code_hash      VARCHAR(128) NOT NULL,
    relates_to     VARCHAR(320) NOT NULL,
    flow_state_id  VARCHAR(64),
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL,
    INDEX one_time_tokens_user_kind (user_id, kind),
    INDEX one_time_tokens_code (code_hash),
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS flow_states (
    id                     VARCHAR(64) PRIMARY KEY,
    user_id                VARCHAR(64),
    code_challenge         VARCHAR(128) NOT NULL,
    code_challenge_method  VARCHAR(16) NOT NULL,
    authentication_method  VARCHAR(32) NOT NULL,
    auth_code_hash         VARCHAR(128) UNIQUE,
    auth_code_issued_at    BIGINT,
    created_at             BIGINT NOT NULL,
    expires_at             BIGINT NOT NULL,
    INDEX flow_states_expires (expires_at)
) ENGINE=InnoDB;

ALTER TABLE users
    ADD COLUMN confirmation_sent_at BIGINT,
    ADD COLUMN recovery_sent_at BIGINT,
    ADD COLUMN invited_at BIGINT,
    ADD COLUMN email_change VARCHAR(320),
    ADD COLUMN email_change_sent_at BIGINT,
    ADD COLUMN email_change_confirm_status BIGINT NOT NULL DEFAULT 0,
    ADD COLUMN reauthentication_sent_at BIGINT,
    ADD COLUMN email_confirmed_by VARCHAR(16);

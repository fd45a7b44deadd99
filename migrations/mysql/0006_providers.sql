-- MySQL/MariaDB dialect of sqlite/0006_providers.sql (see there).

CREATE TABLE IF NOT EXISTS identity_providers (
    id                 VARCHAR(64) PRIMARY KEY,
    kind               VARCHAR(16) NOT NULL,
    issuer             VARCHAR(2048) NOT NULL DEFAULT '',
    client_id          VARCHAR(512) NOT NULL,
    client_secret      BLOB,
    scopes             TEXT NOT NULL,
    authorization_url  VARCHAR(2048) NOT NULL DEFAULT '',
    token_url          VARCHAR(2048) NOT NULL DEFAULT '',
    userinfo_url       VARCHAR(2048) NOT NULL DEFAULT '',
    mapping            TEXT NOT NULL,
    enabled            BIGINT NOT NULL DEFAULT 1,
    created_at         BIGINT NOT NULL,
    updated_at         BIGINT NOT NULL
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS upstream_states (
    id_hash         VARCHAR(64) PRIMARY KEY,
    provider_id     VARCHAR(64) NOT NULL,
    redirect_to     TEXT NOT NULL,
    code_verifier   VARCHAR(128) NOT NULL,
    nonce           VARCHAR(128) NOT NULL,
    flow_state_id   VARCHAR(64),
    link_user_id    VARCHAR(64),
    expires_at      BIGINT NOT NULL,
    created_at      BIGINT NOT NULL,
    INDEX upstream_states_expires (expires_at)
) ENGINE=InnoDB;

ALTER TABLE sessions ADD COLUMN amr VARCHAR(32);

-- MySQL/MariaDB dialect of sqlite/0003_oauth.sql (see there). DDL commits
-- implicitly in MySQL, so every statement can run again (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS oauth_clients (
    id                          VARCHAR(64) PRIMARY KEY,
    name                        VARCHAR(255) NOT NULL,
    client_type                 VARCHAR(16) NOT NULL,
    token_endpoint_auth_method  VARCHAR(32) NOT NULL,
    secret_hash                 VARCHAR(128) NOT NULL DEFAULT '',
    redirect_uris               MEDIUMTEXT NOT NULL,
    post_logout_redirect_uris   MEDIUMTEXT NOT NULL,
    grant_types                 TEXT NOT NULL,
    scopes                      TEXT NOT NULL,
    skip_consent                BIGINT NOT NULL DEFAULT 0,
    logo_uri                    TEXT,
    client_uri                  TEXT,
    registration_type           VARCHAR(16) NOT NULL DEFAULT 'manual',
    created_at                  BIGINT NOT NULL,
    updated_at                  BIGINT NOT NULL
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS oauth_consents (
    user_id     VARCHAR(64) NOT NULL,
    client_id   VARCHAR(64) NOT NULL,
    scopes      TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    PRIMARY KEY (user_id, client_id),
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS oauth_grants (
    session_id  VARCHAR(64) PRIMARY KEY,
    client_id   VARCHAR(64) NOT NULL,
    scopes      TEXT NOT NULL,
    auth_time   BIGINT NOT NULL,
    amr         TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    KEY oauth_grants_client_id (client_id),
    FOREIGN KEY (session_id) REFERENCES sessions(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS oauth_browser_sessions (
    token_hash  VARCHAR(128) PRIMARY KEY,
    session_id  VARCHAR(64) NOT NULL,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    KEY oauth_browser_sessions_session_id (session_id),
    FOREIGN KEY (session_id) REFERENCES sessions(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS oauth_auth_requests (
    id          VARCHAR(64) PRIMARY KEY,
    client_id   VARCHAR(64) NOT NULL,
    request     MEDIUMTEXT NOT NULL,
    user_id     VARCHAR(64),
    auth_time   BIGINT,
    amr         TEXT NOT NULL,
    done        BIGINT NOT NULL DEFAULT 0,
    code_hash   VARCHAR(128) UNIQUE,
    session_id  VARCHAR(64),
    used_at     BIGINT,
    expires_at  BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    KEY oauth_auth_requests_expires_at (expires_at)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS oauth_device_codes (
    device_code_hash  VARCHAR(128) PRIMARY KEY,
    user_code         VARCHAR(32) NOT NULL UNIQUE,
    client_id         VARCHAR(64) NOT NULL,
    scopes            TEXT NOT NULL,
    state             VARCHAR(16) NOT NULL DEFAULT 'pending',
    user_id           VARCHAR(64),
    auth_time         BIGINT,
    amr               TEXT NOT NULL,
    interval_s        BIGINT NOT NULL,
    last_poll_at      BIGINT,
    expires_at        BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    KEY oauth_device_codes_expires_at (expires_at)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS oauth_revoked_tokens (
    jti         VARCHAR(128) PRIMARY KEY,
    expires_at  BIGINT NOT NULL
) ENGINE=InnoDB;

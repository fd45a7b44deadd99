-- The first schema of a tenant, MySQL/MariaDB dialect: the same tables,
-- columns and version as sqlite/0001_init.sql. A tenant is a database created
-- with utf8mb4_bin, so comparisons are case- and accent-sensitive as in
-- SQLite. Connections run with sql_mode ANSI_QUOTES: "key" is an identifier.
-- DDL commits implicitly in MySQL, so every statement can run again after a
-- crash half-way (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS users (
    id                  VARCHAR(64) PRIMARY KEY,
    aud                 VARCHAR(255) NOT NULL DEFAULT 'authenticated',
    role                VARCHAR(255) NOT NULL DEFAULT 'authenticated',
    email               VARCHAR(320) UNIQUE,
    phone               VARCHAR(64) UNIQUE,
    encrypted_password  TEXT NOT NULL,
    email_confirmed_at  BIGINT,
    phone_confirmed_at  BIGINT,
    last_sign_in_at     BIGINT,
    last_seen_at        BIGINT,
    raw_app_meta_data   MEDIUMTEXT NOT NULL,
    raw_user_meta_data  MEDIUMTEXT NOT NULL,
    banned_until        BIGINT,
    is_anonymous        BIGINT NOT NULL DEFAULT 0,
    created_at          BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    deleted_at          BIGINT
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS identities (
    id               VARCHAR(64) PRIMARY KEY,
    user_id          VARCHAR(64) NOT NULL,
    provider         VARCHAR(64) NOT NULL,
    provider_id      VARCHAR(255) NOT NULL,
    identity_data    MEDIUMTEXT NOT NULL,
    email            VARCHAR(320),
    last_sign_in_at  BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL,
    UNIQUE KEY identities_provider (provider, provider_id),
    KEY identities_user_id (user_id),
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS sessions (
    id            VARCHAR(64) PRIMARY KEY,
    user_id       VARCHAR(64) NOT NULL,
    aal           VARCHAR(16) NOT NULL DEFAULT 'aal1',
    user_agent    TEXT,
    ip            VARCHAR(64),
    not_after     BIGINT,
    refreshed_at  BIGINT,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    KEY sessions_user_id (user_id),
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS refresh_tokens (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    token_hash  VARCHAR(128) NOT NULL UNIQUE,
    user_id     VARCHAR(64) NOT NULL,
    session_id  VARCHAR(64) NOT NULL,
    parent      VARCHAR(128),
    revoked     BIGINT NOT NULL DEFAULT 0,
    created_at  BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL,
    KEY refresh_tokens_session_id (session_id),
    KEY refresh_tokens_parent (parent),
    FOREIGN KEY (user_id) REFERENCES users(id) ON DELETE CASCADE,
    FOREIGN KEY (session_id) REFERENCES sessions(id) ON DELETE CASCADE
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS audit_log (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    action      VARCHAR(64) NOT NULL,
    actor_id    VARCHAR(64),
    actor_email VARCHAR(320),
    ip          VARCHAR(64),
    payload     MEDIUMTEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    KEY audit_log_created_at (created_at)
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS signing_keys (
    kid          VARCHAR(64) PRIMARY KEY,
    algorithm    VARCHAR(16) NOT NULL,
    public_key   BLOB NOT NULL,
    private_key  BLOB NOT NULL,
    active       BIGINT NOT NULL DEFAULT 0,
    created_at   BIGINT NOT NULL,
    retired_at   BIGINT
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS settings (
    "key"  VARCHAR(191) PRIMARY KEY,
    value  MEDIUMTEXT NOT NULL
) ENGINE=InnoDB;

-- MySQL/MariaDB dialect of sqlite/0004_webhooks.sql (see there).

CREATE TABLE IF NOT EXISTS webhook_endpoints (
    id               VARCHAR(64) PRIMARY KEY,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL,
    enabled          BIGINT NOT NULL DEFAULT 1,
    secret           VARCHAR(128) NOT NULL,
    previous_secret  VARCHAR(128),
    previous_until   BIGINT,
    disabled_reason  TEXT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
) ENGINE=InnoDB;

CREATE TABLE IF NOT EXISTS webhook_deliveries (
    id           BIGINT AUTO_INCREMENT PRIMARY KEY,
    endpoint_id  VARCHAR(64) NOT NULL,
    event_id     VARCHAR(64) NOT NULL,
    event_type   VARCHAR(64) NOT NULL,
    attempt      BIGINT NOT NULL,
    status       BIGINT,
    latency_ms   BIGINT NOT NULL,
    error        TEXT,
    payload      MEDIUMTEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    KEY webhook_deliveries_endpoint (endpoint_id, id),
    KEY webhook_deliveries_created_at (created_at)
) ENGINE=InnoDB;

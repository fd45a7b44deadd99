-- The outbox, MySQL/MariaDB dialect: the same table as sqlite/0002_outbox.sql.
-- DDL commits implicitly in MySQL, so the statement can run again after a
-- crash half-way (IF NOT EXISTS).

CREATE TABLE IF NOT EXISTS outbox (
    id          BIGINT AUTO_INCREMENT PRIMARY KEY,
    event_id    VARCHAR(64) NOT NULL,
    topic       VARCHAR(64) NOT NULL,
    event_type  VARCHAR(64) NOT NULL,
    payload     MEDIUMTEXT NOT NULL,
    attempts    BIGINT NOT NULL DEFAULT 0,
    next_at     BIGINT NOT NULL,
    last_error  TEXT,
    created_at  BIGINT NOT NULL,
    KEY outbox_next_at (next_at)
) ENGINE=InnoDB;

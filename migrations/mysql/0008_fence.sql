-- MySQL/MariaDB dialect of sqlite/0008_fence.sql (see there).

CREATE TABLE fence (
    id     INT PRIMARY KEY,
    epoch  BIGINT NOT NULL
);
INSERT INTO fence (id, epoch) VALUES (1, 0);

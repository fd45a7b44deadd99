-- PostgreSQL dialect of sqlite/0008_fence.sql (see there).

CREATE TABLE fence (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL
);
INSERT INTO fence (id, epoch) VALUES (1, 0);

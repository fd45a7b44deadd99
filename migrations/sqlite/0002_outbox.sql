-- The outbox: what a tenant must deliver after a write committed (a webhook
-- call, a mail), written in the same transaction as the write and its
-- audit row, delivered by background workers outside the writer, deleted
-- once delivered. Times are INTEGER Unix microseconds (UTC).

CREATE TABLE outbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id    TEXT NOT NULL,     -- the event's stable id: a receiver's idempotency key
    topic       TEXT NOT NULL,     -- the sink that delivers it (webhook, mail)
    event_type  TEXT NOT NULL,     -- e.g. user.created
    payload     TEXT NOT NULL,     -- the event, versioned JSON
    attempts    INTEGER NOT NULL DEFAULT 0,
    next_at     INTEGER NOT NULL,  -- when the next attempt is due
    last_error  TEXT,
    created_at  INTEGER NOT NULL
);
CREATE INDEX outbox_next_at ON outbox(next_at);

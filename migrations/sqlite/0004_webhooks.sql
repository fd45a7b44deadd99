-- Webhook endpoints of a tenant and their delivery log. An event for an
-- endpoint is an outbox row of topic "webhook:<endpoint id>", written in
-- the transaction of the change that caused it.

CREATE TABLE webhook_endpoints (
    id               TEXT PRIMARY KEY,
    url              TEXT NOT NULL,
    events           TEXT NOT NULL DEFAULT '[]',   -- JSON list of event names; "*" all
    enabled          INTEGER NOT NULL DEFAULT 1,
    secret           TEXT NOT NULL,                -- whsec_<base64>, signs
    previous_secret  TEXT,                         -- also signs until previous_until (rotation)
    previous_until   INTEGER,
    disabled_reason  TEXT,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE webhook_deliveries (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    endpoint_id  TEXT NOT NULL,
    event_id     TEXT NOT NULL,
    event_type   TEXT NOT NULL,
    attempt      INTEGER NOT NULL,
    status       INTEGER,          -- HTTP status; NULL: no answer
    latency_ms   INTEGER NOT NULL,
    error        TEXT,
    payload      TEXT NOT NULL,    -- what was sent, for a replay
    created_at   INTEGER NOT NULL
);
CREATE INDEX webhook_deliveries_endpoint ON webhook_deliveries(endpoint_id, id);
CREATE INDEX webhook_deliveries_created_at ON webhook_deliveries(created_at);

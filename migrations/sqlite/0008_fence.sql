-- The fencing token of the node that owns this tenant (several nodes
-- sharing a catalog): the epoch under which the owner took the tenant.
-- Every write batch of a fenced shard reads it inside its own transaction
-- and fails when it is above the epoch the shard was opened with, so an
-- old owner that was paused or cut off cannot commit after the tenant
-- moved. The new owner raises it with its first batch, and the mover
-- right after the catalog flip. 0: never owned through a catalog.
-- It is not tenant data: exports and moves leave it out (transfer.Tables).
CREATE TABLE fence (
    id     INTEGER PRIMARY KEY CHECK (id = 1),
    epoch  BIGINT NOT NULL
);
INSERT INTO fence (id, epoch) VALUES (1, 0);

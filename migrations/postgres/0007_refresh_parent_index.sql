-- PostgreSQL dialect of sqlite/0007_refresh_parent_index.sql (see there).
DROP INDEX IF EXISTS refresh_tokens_parent;

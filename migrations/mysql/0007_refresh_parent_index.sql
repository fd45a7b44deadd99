-- MySQL/MariaDB dialect of sqlite/0007_refresh_parent_index.sql (see there).
-- MySQL has no DROP INDEX IF EXISTS: a crash between this statement and the
-- version's update leaves a migration that fails until the version is set by
-- hand (the index is gone either way).
DROP INDEX refresh_tokens_parent ON refresh_tokens;

-- refresh_tokens.parent is compared on a row already found (reuse within the
-- grace interval), never searched: its index cost every refresh a write of a
-- random index page (parents are token hashes) and bought nothing.
DROP INDEX IF EXISTS refresh_tokens_parent;

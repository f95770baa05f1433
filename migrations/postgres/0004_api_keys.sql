-- Admin API keys, one workspace each. Same shape as SQLite
-- (0004_api_keys.sql there). Times are unix milliseconds.
--
-- Only the SHA-256 (hex) of a key is stored: the key itself is printed once
-- by `enrichd apikey create` and never kept. A request's key is hashed and
-- looked up here; a revoked key (`revoked_at` set) no longer authenticates.
CREATE TABLE api_keys (
    key_id     TEXT    NOT NULL PRIMARY KEY,    -- public id, for list and revoke
    workspace  TEXT    NOT NULL,
    key_hash   TEXT    NOT NULL,                -- lowercase hex SHA-256 of the key
    created_at BIGINT  NOT NULL,
    revoked_at BIGINT
);
CREATE UNIQUE INDEX api_keys_by_hash ON api_keys (key_hash);
CREATE INDEX api_keys_by_workspace ON api_keys (workspace, created_at);

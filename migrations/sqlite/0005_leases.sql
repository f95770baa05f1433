-- Leases: long-lived ownership of a named piece of work (a CRM connection:
-- `crm:<workspace>:<crm>`) by one replica at a time. Same shape on
-- PostgreSQL (0005_leases.sql there). Times are unix milliseconds from the
-- callers' clocks (never the database's).
--
-- The row of a name is never deleted: `token` (the fencing token) only
-- grows, by one at every new ownership (first acquire, takeover after
-- expiry, re-acquire after a release); a renewal by the live holder keeps
-- it. A lease is live while `expires_at > now`; a released lease has
-- `expires_at = 0`. Writes that must be fenced check, in their own
-- transaction, that (name, holder, token) is still live.
CREATE TABLE leases (
    name         TEXT    NOT NULL PRIMARY KEY,
    holder       TEXT    NOT NULL,             -- replica id (unique per process)
    token        INTEGER NOT NULL,             -- fencing token, >= 1
    expires_at   INTEGER NOT NULL,
    acquired_at  INTEGER NOT NULL,             -- start of the current ownership
    heartbeat_at INTEGER NOT NULL              -- last acquire, heartbeat or release
) STRICT;

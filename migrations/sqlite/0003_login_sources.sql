-- Failed logins count per source address (a /32 for IPv4, a /64 for IPv6)
-- as well as per name: penalties fall on the source, not on the name.
ALTER TABLE login_failures ADD COLUMN source TEXT NOT NULL DEFAULT '';
CREATE INDEX login_failures_source_at ON login_failures (source, at);

-- Per-user limits an administrator sets (`admin-cli user limit`): transfer
-- rates in bytes per second and sessions at once; NULL takes the daemon's
-- default (--upload-rate, --download-rate, --max-sessions).
ALTER TABLE users ADD COLUMN upload_rate INTEGER CHECK (upload_rate IS NULL OR upload_rate > 0);
ALTER TABLE users ADD COLUMN download_rate INTEGER CHECK (download_rate IS NULL OR download_rate > 0);
ALTER TABLE users ADD COLUMN max_sessions INTEGER CHECK (max_sessions IS NULL OR max_sessions > 0);

-- The sessions open now, over every service and process on this database,
-- for --max-sessions. A process beats every few seconds; the sessions of a
-- process that stopped beating (it crashed) no longer count.
CREATE TABLE processes (
    id      TEXT    PRIMARY KEY,
    beat_at INTEGER NOT NULL
) STRICT;
CREATE TABLE live_sessions (
    id        INTEGER PRIMARY KEY,
    user_id   INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service   TEXT    NOT NULL,
    process   TEXT    NOT NULL,
    opened_at INTEGER NOT NULL
) STRICT;
CREATE INDEX live_sessions_user ON live_sessions (user_id);
CREATE INDEX live_sessions_process ON live_sessions (process);

-- Wharf's shared database: users, their rights and quotas, and the usage
-- events every service records. Times are unix milliseconds (UTC).

CREATE TABLE users (
    id             INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE,
    password_hash  TEXT    NOT NULL,                -- argon2id PHC string
    home           TEXT    NOT NULL,                -- absolute path
    quota_bytes    INTEGER CHECK (quota_bytes IS NULL OR quota_bytes >= 0), -- NULL: unlimited
    used_bytes     INTEGER NOT NULL DEFAULT 0 CHECK (used_bytes >= 0),
    reserved_bytes INTEGER NOT NULL DEFAULT 0 CHECK (reserved_bytes >= 0),
    file_count     INTEGER NOT NULL DEFAULT 0 CHECK (file_count >= 0),
    locked         INTEGER NOT NULL DEFAULT 0 CHECK (locked IN (0, 1)),
    created_at     INTEGER NOT NULL,
    last_login_at  INTEGER
) STRICT;

CREATE TABLE user_services (
    user_id INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    service TEXT    NOT NULL CHECK (service IN ('ftp', 'chat', 'exec')),
    PRIMARY KEY (user_id, service)
) STRICT, WITHOUT ROWID;

-- Failed logins by attempted name (known or not), for lockout.
CREATE TABLE login_failures (
    id   INTEGER PRIMARY KEY,
    name TEXT    NOT NULL,
    at   INTEGER NOT NULL
) STRICT;
CREATE INDEX login_failures_name_at ON login_failures (name, at);
CREATE INDEX login_failures_at ON login_failures (at);

CREATE TABLE transfers (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    direction   TEXT    NOT NULL CHECK (direction IN ('up', 'down')),
    path        TEXT    NOT NULL,
    bytes       INTEGER NOT NULL CHECK (bytes >= 0),
    md5         TEXT,
    ok          INTEGER NOT NULL CHECK (ok IN (0, 1)),
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    at          INTEGER NOT NULL
) STRICT;
CREATE INDEX transfers_user_at ON transfers (user_id, at);

-- A room message has a room; a direct message has a recipient instead.
CREATE TABLE chat_messages (
    id           INTEGER PRIMARY KEY,
    room         TEXT,
    recipient_id INTEGER REFERENCES users (id) ON DELETE CASCADE,
    sender_id    INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    body         TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    CHECK ((room IS NULL) <> (recipient_id IS NULL))
) STRICT;
CREATE INDEX chat_messages_room_id ON chat_messages (room, id);
CREATE INDEX chat_messages_sender_at ON chat_messages (sender_id, at);

CREATE TABLE exec_log (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    command     TEXT    NOT NULL,
    exit_code   INTEGER,            -- NULL when killed by a signal
    signal      INTEGER,
    duration_ms INTEGER NOT NULL CHECK (duration_ms >= 0),
    bytes_out   INTEGER NOT NULL CHECK (bytes_out >= 0),
    at          INTEGER NOT NULL
) STRICT;
CREATE INDEX exec_log_user_at ON exec_log (user_id, at);

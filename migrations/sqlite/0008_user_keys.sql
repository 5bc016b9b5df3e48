-- Users' SSH public keys (`admin-cli user key add`), for the SSH door and
-- the native clients' key login. A key is stored as its OpenSSH line
-- without the comment ("TYPE BASE64"), found by its SHA256 fingerprint
-- (as ssh-keygen -lf prints it), and goes with its user.
CREATE TABLE user_keys (
    id           INTEGER PRIMARY KEY,
    user_id      INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    fingerprint  TEXT    NOT NULL,
    key_type     TEXT    NOT NULL,
    public_key   TEXT    NOT NULL,
    comment      TEXT    NOT NULL,
    added_at     INTEGER NOT NULL,
    last_used_at INTEGER,
    UNIQUE (user_id, fingerprint)
) STRICT;

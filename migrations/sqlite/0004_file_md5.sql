-- The md5 of stored files, recorded when an upload is verified (or when a
-- download had to hash a file), tied to the version of the file it was
-- computed from: a file changed since (by a command, by hand) no longer
-- matches its inode, size, mtime and ctime, and is hashed again.
CREATE TABLE file_md5 (
    user_id  INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    dev      INTEGER NOT NULL,
    ino      INTEGER NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    md5      TEXT    NOT NULL,
    PRIMARY KEY (user_id, dev, ino)
) WITHOUT ROWID;

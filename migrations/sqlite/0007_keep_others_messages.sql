-- Deleting a user keeps other users' records: a message to or from a
-- deleted user stays (alice's direct message to bob is alice's), with the
-- deleted side NULL (shown as a deleted user). A direct message is one with
-- no room. SQLite cannot change a foreign key in place: the table is made
-- again, rows and indexes as they were.
CREATE TABLE chat_messages_new (
    id           INTEGER PRIMARY KEY,
    room         TEXT,
    recipient_id INTEGER REFERENCES users (id) ON DELETE SET NULL,
    sender_id    INTEGER REFERENCES users (id) ON DELETE SET NULL,
    body         TEXT    NOT NULL,
    at           INTEGER NOT NULL,
    seq          INTEGER,
    CHECK (room IS NULL OR recipient_id IS NULL)
) STRICT;
INSERT INTO chat_messages_new (id, room, recipient_id, sender_id, body, at, seq)
    SELECT id, room, recipient_id, sender_id, body, at, seq FROM chat_messages;
DROP TABLE chat_messages;
ALTER TABLE chat_messages_new RENAME TO chat_messages;
CREATE INDEX chat_messages_room_id ON chat_messages (room, id);
CREATE INDEX chat_messages_sender_at ON chat_messages (sender_id, at);
CREATE UNIQUE INDEX chat_messages_room_seq ON chat_messages (room, seq) WHERE room IS NOT NULL;

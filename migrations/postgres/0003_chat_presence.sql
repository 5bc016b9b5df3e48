-- Who is where, across the chat servers (replicas) sharing this database.
-- Each replica has a row it refreshes every few seconds; a replica not
-- seen for a while is deleted by the others, and its presence with it.
CREATE TABLE chat_replicas (
    id   TEXT   PRIMARY KEY,
    seen BIGINT NOT NULL
);

-- A user with at least one session in a room on a replica.
CREATE TABLE chat_members (
    replica TEXT   NOT NULL REFERENCES chat_replicas (id) ON DELETE CASCADE,
    room    TEXT   NOT NULL,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (replica, room, user_id)
);
CREATE INDEX chat_members_room ON chat_members (room);

-- A user with at least one chat session on a replica (direct messages
-- reach users who are online anywhere).
CREATE TABLE chat_online (
    replica TEXT   NOT NULL REFERENCES chat_replicas (id) ON DELETE CASCADE,
    user_id BIGINT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    PRIMARY KEY (replica, user_id)
);
CREATE INDEX chat_online_user ON chat_online (user_id);

-- Each room's last message number, one row per room: posting a message
-- updates it in the same statement that inserts the message, and its row
-- lock (held to the commit) numbers a room's messages in commit order,
-- across every chat server on the database (see Store::post_chat_message).
CREATE TABLE chat_room_seqs (
    room TEXT   PRIMARY KEY,
    seq  BIGINT NOT NULL
);
INSERT INTO chat_room_seqs (room, seq)
SELECT room, MAX(seq) FROM chat_messages WHERE room IS NOT NULL GROUP BY room;

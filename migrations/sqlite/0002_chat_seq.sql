-- Room messages are numbered per room (seq 1, 2, 3...) so clients can tell
-- gaps and duplicates apart; direct messages have no seq.
ALTER TABLE chat_messages ADD COLUMN seq INTEGER;
CREATE UNIQUE INDEX chat_messages_room_seq ON chat_messages (room, seq) WHERE room IS NOT NULL;

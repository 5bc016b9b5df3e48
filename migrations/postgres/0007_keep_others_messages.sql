-- Deleting a user keeps other users' records: a message to or from a
-- deleted user stays (alice's direct message to bob is alice's), with the
-- deleted side NULL (shown as a deleted user). A direct message is one with
-- no room.
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_recipient_id_fkey;
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_sender_id_fkey;
ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_check;
ALTER TABLE chat_messages ALTER COLUMN sender_id DROP NOT NULL;
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_recipient_id_fkey
    FOREIGN KEY (recipient_id) REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_sender_id_fkey
    FOREIGN KEY (sender_id) REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE chat_messages ADD CONSTRAINT chat_messages_check
    CHECK (room IS NULL OR recipient_id IS NULL);

-- Chat message ids from the database, so that chat servers sharing one
-- database never hand out the same id (room numbers come from the rows
-- themselves, under a lock per room: see Store::post_chat_message).
CREATE SEQUENCE chat_message_ids;
SELECT setval('chat_message_ids', COALESCE((SELECT MAX(id) FROM chat_messages), 0) + 1, false);

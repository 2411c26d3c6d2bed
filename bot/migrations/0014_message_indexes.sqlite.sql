-- Every stored message writes each of bot_message's indexes: keep those a query needs.
-- A group chat's messages are found by (roomid, msgtime) (0008), which answers any
-- lookup by roomid alone; nothing looks messages up by sender_id alone (a room's
-- messages are narrowed to a sender after the room's index); only customers' messages
-- carry an intent, and every query on intent names one, so its index leaves out the
-- rows without (most of them: advisors' lines and members' callbacks).
DROP INDEX IF EXISTS "idx_bot_message_roomid_abc07b";
DROP INDEX IF EXISTS "idx_bot_message_sender__4519a5";
DROP INDEX IF EXISTS "idx_bot_message_intent_2032f5";
CREATE INDEX IF NOT EXISTS "idx_bot_message_intent_set" ON "bot_message" ("intent") WHERE "intent" IS NOT NULL;

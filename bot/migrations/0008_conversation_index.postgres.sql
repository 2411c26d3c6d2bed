-- The analyse stage reads each advisor line's conversation before storing it: the
-- messages of an advisor–customer pair (or a group chat) in the last 24 hours
-- (bot.service.conversation_turns). Without these, that read scans every message of
-- the day across all conversations (bench/precheck_plan.py on a million rows).
CREATE INDEX IF NOT EXISTS "idx_bot_message_customer_msgtime" ON "bot_message" ("customer_id", "msgtime");
CREATE INDEX IF NOT EXISTS "idx_bot_message_roomid_msgtime" ON "bot_message" ("roomid", "msgtime");

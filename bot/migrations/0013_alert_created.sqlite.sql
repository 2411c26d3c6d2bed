-- The dashboard counts alerts per day and kind over its window (bot.service
-- alerts_per_day): without this, every alert ever raised is read for the last 30 days.
CREATE INDEX IF NOT EXISTS "idx_bot_alert_created_kind" ON "bot_alert" ("created_at", "kind");

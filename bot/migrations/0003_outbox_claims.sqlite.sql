-- Outbox claims (bot.jobs.OutboxDispatcher): each claim writes a token that every
-- finish and lease renewal must match, so a dispatcher that lost its row changes
-- nothing; request_at remembers that a request may have reached WeCom unanswered,
-- so a write that must not be repeated is left in state "unknown" for an operator.
-- (state, next_attempt_at) answers the due-row query without reading settled rows.
ALTER TABLE "bot_outbox" ADD COLUMN "claim" VARCHAR(32);
ALTER TABLE "bot_outbox" ADD COLUMN "request_at" TIMESTAMP;
CREATE INDEX "idx_bot_outbox_state_next_at" ON "bot_outbox" ("state", "next_attempt_at");

-- The public outbox: every row says who asked (origin), when it settled, and
-- whether its on-settled callback still has to run; a cancelled state for rows a
-- before-send check refused.  Indexes for the dispatcher's stale-lease scan and
-- the dead-letter listing.
ALTER TABLE "bot_outbox" ADD COLUMN "origin" VARCHAR(96) NOT NULL DEFAULT '';
ALTER TABLE "bot_outbox" ADD COLUMN "settled_at" TIMESTAMP;
ALTER TABLE "bot_outbox" ADD COLUMN "notify_pending" INT NOT NULL DEFAULT 0;
CREATE INDEX "idx_bot_outbox_origin" ON "bot_outbox" ("origin");
CREATE INDEX "idx_bot_outbox_notify_pending" ON "bot_outbox" ("notify_pending");
CREATE INDEX "idx_bot_outbox_state_lease" ON "bot_outbox" ("state", "lease_until");
CREATE INDEX "idx_bot_dead_letter_status" ON "bot_dead_letter" ("status");

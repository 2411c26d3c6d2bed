-- The console's customer search (admin's customer pages): a customer's phone numbers as
-- advisors noted them (WeCom follow_user remark_mobiles, numbers in the remark and
-- description), sealed, masked, and as a keyed blind index so an exact number finds
-- the customer without being stored in clear (bot.customers). phones_key_id on the
-- follow relation says under which field key its numbers were indexed: NULL for rows
-- stored before this migration, which `siyu keys seal-existing` indexes.
-- The customer page also reads a customer's alerts and an advisor's customers.
ALTER TABLE "bot_follow_relation" ADD COLUMN "phones_key_id" VARCHAR(32);
CREATE TABLE "bot_customer_phone" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "source" VARCHAR(16) NOT NULL,
    "phone_bidx" VARCHAR(64) NOT NULL,
    "phone_masked" VARCHAR(32) NOT NULL,
    "phone_sealed" TEXT NOT NULL,
    "advisor_id" BIGINT NOT NULL REFERENCES "bot_advisor" ("id") ON DELETE CASCADE,
    "customer_id" BIGINT NOT NULL REFERENCES "bot_customer" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_bot_custome_phone" UNIQUE ("customer_id", "advisor_id", "source", "phone_bidx")
);
CREATE INDEX "idx_bot_custome_phone_bidx" ON "bot_customer_phone" ("phone_bidx");
CREATE INDEX "idx_bot_follow_advisor_status" ON "bot_follow_relation" ("advisor_id", "status");
CREATE INDEX "idx_bot_alert_external_created" ON "bot_alert" ("external_userid", "created_at");

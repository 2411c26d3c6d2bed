-- Personal data at rest (PIPL art. 28, 51): event fields outside the clear allow-list,
-- the originals of follow-relation remark/description (their clear copies are masked),
-- and outbox payloads that name a customer are kept sealed (AES-GCM, bound to the row).
-- bot_field_key records which keys the data was sealed with (an HMAC per key id, never
-- the key), so a process started with other keys is refused before it writes.
ALTER TABLE "bot_event" ADD COLUMN "fields_sealed" TEXT;
ALTER TABLE "bot_follow_relation" ADD COLUMN "remark_sealed" TEXT;
ALTER TABLE "bot_follow_relation" ADD COLUMN "description_sealed" TEXT;
ALTER TABLE "bot_outbox" ADD COLUMN "payload_sealed" TEXT;
CREATE TABLE "bot_field_key" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "key_id" VARCHAR(64) NOT NULL UNIQUE,
    "key_check" VARCHAR(64) NOT NULL
);
COMMENT ON TABLE "bot_field_key" IS 'A field key the data was sealed with: its id and an HMAC proving which key, never the key.';

-- 0001_initial: the edge's tables (bot.models). Generated with python -m core.schema_sql, reviewed.
CREATE TABLE "bot_advisor" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "userid" VARCHAR(64) NOT NULL UNIQUE,
    "name" VARCHAR(128) NOT NULL,
    "department" VARCHAR(255) NOT NULL,
    "manager_userid" VARCHAR(64),
    "status" VARCHAR(16) NOT NULL,
    "synced_at" TIMESTAMPTZ
);
COMMENT ON TABLE "bot_advisor" IS 'A WeCom member (客户经理/投顾/代理人) who follows customers.';
CREATE TABLE "bot_alert" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "idem_key" VARCHAR(160) NOT NULL UNIQUE,
    "kind" VARCHAR(32) NOT NULL,
    "recipient_userid" VARCHAR(64),
    "advisor_userid" VARCHAR(64),
    "external_userid" VARCHAR(64),
    "msgid" VARCHAR(128),
    "detail" JSONB NOT NULL,
    "status" VARCHAR(16) NOT NULL
);
CREATE INDEX "idx_bot_alert_kind_ab2cb6" ON "bot_alert" ("kind");
CREATE INDEX "idx_bot_alert_recipie_a42081" ON "bot_alert" ("recipient_userid");
COMMENT ON TABLE "bot_alert" IS 'Something an advisor or manager must hear about now.';
CREATE TABLE "bot_archive_cursor" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "seq" BIGINT NOT NULL
);
COMMENT ON TABLE "bot_archive_cursor" IS '会话存档 seq cursor: advanced only after a batch is durably queued.';
CREATE TABLE "bot_customer" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "external_userid" VARCHAR(64) NOT NULL UNIQUE,
    "unionid" VARCHAR(64),
    "name" VARCHAR(128) NOT NULL,
    "contact_type" SMALLINT NOT NULL,
    "corp_name" VARCHAR(255) NOT NULL,
    "gender" SMALLINT NOT NULL,
    "attributes" JSONB NOT NULL,
    "needs_sync" BOOL NOT NULL,
    "synced_at" TIMESTAMPTZ
);
CREATE INDEX "idx_bot_custome_unionid_473a0c" ON "bot_customer" ("unionid");
COMMENT ON TABLE "bot_customer" IS 'An external contact (外部联系人).';
CREATE TABLE "bot_dead_letter" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "stream_id" VARCHAR(64) NOT NULL UNIQUE,
    "source" VARCHAR(16) NOT NULL,
    "dedup_key" VARCHAR(160) NOT NULL,
    "payload_sealed" TEXT NOT NULL,
    "error" VARCHAR(1024) NOT NULL,
    "deliveries" INT NOT NULL,
    "status" VARCHAR(16) NOT NULL
);
COMMENT ON TABLE "bot_dead_letter" IS 'A stream entry that kept failing: kept for an operator, never dropped.';
CREATE TABLE "bot_event" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "event_key" VARCHAR(128) NOT NULL UNIQUE,
    "kind" VARCHAR(16) NOT NULL,
    "event" VARCHAR(64) NOT NULL,
    "change_type" VARCHAR(64) NOT NULL,
    "occurred_at" TIMESTAMPTZ NOT NULL,
    "fields_json" JSONB NOT NULL,
    "raw_sealed" TEXT
);
CREATE INDEX "idx_bot_event_event_80d3a1" ON "bot_event" ("event");
COMMENT ON TABLE "bot_event" IS 'A WeCom event (or a payload we could not classify), kept whole.';
CREATE TABLE "bot_follow_relation" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "remark" VARCHAR(255) NOT NULL,
    "description" VARCHAR(512) NOT NULL,
    "added_at" TIMESTAMPTZ,
    "add_way" INT,
    "state" VARCHAR(64) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "status_changed_at" TIMESTAMPTZ,
    "advisor_id" BIGINT NOT NULL REFERENCES "bot_advisor" ("id") ON DELETE CASCADE,
    "customer_id" BIGINT NOT NULL REFERENCES "bot_customer" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_bot_follow__custome_5799e6" UNIQUE ("customer_id", "advisor_id")
);
COMMENT ON COLUMN "bot_follow_relation"."status" IS 'ACTIVE: active\nLOST: lost\nREMOVED: removed';
COMMENT ON TABLE "bot_follow_relation" IS 'One advisor following one customer: WeCom''s follow_user entry.';
CREATE TABLE "bot_group_chat" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "chat_id" VARCHAR(64) NOT NULL UNIQUE,
    "name" VARCHAR(255) NOT NULL,
    "owner_userid" VARCHAR(64) NOT NULL,
    "member_count" INT NOT NULL,
    "status" VARCHAR(16) NOT NULL
);
CREATE TABLE "bot_message" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "msgid" VARCHAR(128) NOT NULL,
    "source" VARCHAR(16) NOT NULL,
    "direction" VARCHAR(32) NOT NULL,
    "sender_id" VARCHAR(64) NOT NULL,
    "sender_role" VARCHAR(16) NOT NULL,
    "receiver_ids" JSONB NOT NULL,
    "roomid" VARCHAR(64),
    "msgtime" TIMESTAMPTZ NOT NULL,
    "msgtype" VARCHAR(32) NOT NULL,
    "action" VARCHAR(16) NOT NULL,
    "masked_text" TEXT NOT NULL,
    "original_sealed" TEXT,
    "intent" VARCHAR(32),
    "sentiment" VARCHAR(16),
    "has_violation" BOOL NOT NULL,
    "analysis" JSONB,
    "advisor_id" BIGINT REFERENCES "bot_advisor" ("id") ON DELETE SET NULL,
    "customer_id" BIGINT REFERENCES "bot_customer" ("id") ON DELETE SET NULL,
    CONSTRAINT "uid_bot_message_source_9f6b62" UNIQUE ("source", "msgid")
);
CREATE INDEX "idx_bot_message_sender__4519a5" ON "bot_message" ("sender_id");
CREATE INDEX "idx_bot_message_roomid_abc07b" ON "bot_message" ("roomid");
CREATE INDEX "idx_bot_message_msgtime_fc91b5" ON "bot_message" ("msgtime");
CREATE INDEX "idx_bot_message_intent_2032f5" ON "bot_message" ("intent");
CREATE INDEX "idx_bot_message_has_vio_114f69" ON "bot_message" ("has_violation");
COMMENT ON TABLE "bot_message" IS 'A message after analysis: masked text in clear, the original sealed.';
CREATE TABLE "bot_outbox" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "idem_key" VARCHAR(160) NOT NULL UNIQUE,
    "api" VARCHAR(96) NOT NULL,
    "secret_kind" VARCHAR(16) NOT NULL,
    "payload" JSONB NOT NULL,
    "state" VARCHAR(16) NOT NULL,
    "attempts" INT NOT NULL,
    "next_attempt_at" TIMESTAMPTZ NOT NULL,
    "lease_until" TIMESTAMPTZ,
    "last_errcode" INT,
    "last_error" VARCHAR(512) NOT NULL,
    "result" JSONB,
    "done_at" TIMESTAMPTZ
);
CREATE INDEX "idx_bot_outbox_next_at_1b7033" ON "bot_outbox" ("next_attempt_at");
COMMENT ON COLUMN "bot_outbox"."state" IS 'PENDING: pending\nSENDING: sending\nDONE: done\nFAILED: failed';
COMMENT ON TABLE "bot_outbox" IS 'A WeCom write that must happen, drained by the dispatcher.';
CREATE TABLE "bot_review_case" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "advisor_userid" VARCHAR(64) NOT NULL,
    "categories" JSONB NOT NULL,
    "severity" VARCHAR(16) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "message_id" BIGINT NOT NULL UNIQUE REFERENCES "bot_message" ("id") ON DELETE CASCADE
);
CREATE INDEX "idx_bot_review__advisor_75864e" ON "bot_review_case" ("advisor_userid");
CREATE INDEX "idx_bot_review__status_c7768c" ON "bot_review_case" ("status");
COMMENT ON TABLE "bot_review_case" IS 'A flagged advisor message waiting for a compliance reviewer.';

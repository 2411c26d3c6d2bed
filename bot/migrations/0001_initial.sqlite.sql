-- 0001_initial: the edge's tables (bot.models). Generated with python -m core.schema_sql, reviewed.
CREATE TABLE "bot_advisor" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "userid" VARCHAR(64) NOT NULL UNIQUE,
    "name" VARCHAR(128) NOT NULL,
    "department" VARCHAR(255) NOT NULL,
    "manager_userid" VARCHAR(64),
    "status" VARCHAR(16) NOT NULL,
    "synced_at" TIMESTAMP
) /* A WeCom member (客户经理\/投顾\/代理人) who follows customers. */;
CREATE TABLE "bot_alert" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "idem_key" VARCHAR(160) NOT NULL UNIQUE,
    "kind" VARCHAR(32) NOT NULL,
    "recipient_userid" VARCHAR(64),
    "advisor_userid" VARCHAR(64),
    "external_userid" VARCHAR(64),
    "msgid" VARCHAR(128),
    "detail" JSON NOT NULL,
    "status" VARCHAR(16) NOT NULL
) /* Something an advisor or manager must hear about now. */;
CREATE INDEX "idx_bot_alert_kind_ab2cb6" ON "bot_alert" ("kind");
CREATE INDEX "idx_bot_alert_recipie_a42081" ON "bot_alert" ("recipient_userid");
CREATE TABLE "bot_archive_cursor" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "seq" BIGINT NOT NULL
) /* 会话存档 seq cursor: advanced only after a batch is durably queued. */;
CREATE TABLE "bot_customer" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "external_userid" VARCHAR(64) NOT NULL UNIQUE,
    "unionid" VARCHAR(64),
    "name" VARCHAR(128) NOT NULL,
    "contact_type" SMALLINT NOT NULL,
    "corp_name" VARCHAR(255) NOT NULL,
    "gender" SMALLINT NOT NULL,
    "attributes" JSON NOT NULL,
    "needs_sync" INT NOT NULL,
    "synced_at" TIMESTAMP
) /* An external contact (外部联系人). */;
CREATE INDEX "idx_bot_custome_unionid_473a0c" ON "bot_customer" ("unionid");
CREATE TABLE "bot_dead_letter" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "stream_id" VARCHAR(64) NOT NULL UNIQUE,
    "source" VARCHAR(16) NOT NULL,
    "dedup_key" VARCHAR(160) NOT NULL,
    "payload_sealed" TEXT NOT NULL,
    "error" VARCHAR(1024) NOT NULL,
    "deliveries" INT NOT NULL,
    "status" VARCHAR(16) NOT NULL
) /* A stream entry that kept failing: kept for an operator, never dropped. */;
CREATE TABLE "bot_event" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "event_key" VARCHAR(128) NOT NULL UNIQUE,
    "kind" VARCHAR(16) NOT NULL,
    "event" VARCHAR(64) NOT NULL,
    "change_type" VARCHAR(64) NOT NULL,
    "occurred_at" TIMESTAMP NOT NULL,
    "fields_json" JSON NOT NULL,
    "raw_sealed" TEXT
) /* A WeCom event (or a payload we could not classify), kept whole. */;
CREATE INDEX "idx_bot_event_event_80d3a1" ON "bot_event" ("event");
CREATE TABLE "bot_follow_relation" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "remark" VARCHAR(255) NOT NULL,
    "description" VARCHAR(512) NOT NULL,
    "added_at" TIMESTAMP,
    "add_way" INT,
    "state" VARCHAR(64) NOT NULL,
    "status" VARCHAR(16) NOT NULL /* ACTIVE: active\nLOST: lost\nREMOVED: removed */,
    "status_changed_at" TIMESTAMP,
    "advisor_id" BIGINT NOT NULL REFERENCES "bot_advisor" ("id") ON DELETE CASCADE,
    "customer_id" BIGINT NOT NULL REFERENCES "bot_customer" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_bot_follow__custome_5799e6" UNIQUE ("customer_id", "advisor_id")
) /* One advisor following one customer: WeCom's follow_user entry. */;
CREATE TABLE "bot_group_chat" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "chat_id" VARCHAR(64) NOT NULL UNIQUE,
    "name" VARCHAR(255) NOT NULL,
    "owner_userid" VARCHAR(64) NOT NULL,
    "member_count" INT NOT NULL,
    "status" VARCHAR(16) NOT NULL
);
CREATE TABLE "bot_message" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "msgid" VARCHAR(128) NOT NULL,
    "source" VARCHAR(16) NOT NULL,
    "direction" VARCHAR(32) NOT NULL,
    "sender_id" VARCHAR(64) NOT NULL,
    "sender_role" VARCHAR(16) NOT NULL,
    "receiver_ids" JSON NOT NULL,
    "roomid" VARCHAR(64),
    "msgtime" TIMESTAMP NOT NULL,
    "msgtype" VARCHAR(32) NOT NULL,
    "action" VARCHAR(16) NOT NULL,
    "masked_text" TEXT NOT NULL,
    "original_sealed" TEXT,
    "intent" VARCHAR(32),
    "sentiment" VARCHAR(16),
    "has_violation" INT NOT NULL,
    "analysis" JSON,
    "advisor_id" BIGINT REFERENCES "bot_advisor" ("id") ON DELETE SET NULL,
    "customer_id" BIGINT REFERENCES "bot_customer" ("id") ON DELETE SET NULL,
    CONSTRAINT "uid_bot_message_source_9f6b62" UNIQUE ("source", "msgid")
) /* A message after analysis: masked text in clear, the original sealed. */;
CREATE INDEX "idx_bot_message_sender__4519a5" ON "bot_message" ("sender_id");
CREATE INDEX "idx_bot_message_roomid_abc07b" ON "bot_message" ("roomid");
CREATE INDEX "idx_bot_message_msgtime_fc91b5" ON "bot_message" ("msgtime");
CREATE INDEX "idx_bot_message_intent_2032f5" ON "bot_message" ("intent");
CREATE INDEX "idx_bot_message_has_vio_114f69" ON "bot_message" ("has_violation");
CREATE TABLE "bot_outbox" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "idem_key" VARCHAR(160) NOT NULL UNIQUE,
    "api" VARCHAR(96) NOT NULL,
    "secret_kind" VARCHAR(16) NOT NULL,
    "payload" JSON NOT NULL,
    "state" VARCHAR(16) NOT NULL /* PENDING: pending\nSENDING: sending\nDONE: done\nFAILED: failed */,
    "attempts" INT NOT NULL,
    "next_attempt_at" TIMESTAMP NOT NULL,
    "lease_until" TIMESTAMP,
    "last_errcode" INT,
    "last_error" VARCHAR(512) NOT NULL,
    "result" JSON,
    "done_at" TIMESTAMP
) /* A WeCom write that must happen, drained by the dispatcher. */;
CREATE INDEX "idx_bot_outbox_next_at_1b7033" ON "bot_outbox" ("next_attempt_at");
CREATE TABLE "bot_review_case" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "advisor_userid" VARCHAR(64) NOT NULL,
    "categories" JSON NOT NULL,
    "severity" VARCHAR(16) NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "message_id" BIGINT NOT NULL UNIQUE REFERENCES "bot_message" ("id") ON DELETE CASCADE
) /* A flagged advisor message waiting for a compliance reviewer. */;
CREATE INDEX "idx_bot_review__advisor_75864e" ON "bot_review_case" ("advisor_userid");
CREATE INDEX "idx_bot_review__status_c7768c" ON "bot_review_case" ("status");

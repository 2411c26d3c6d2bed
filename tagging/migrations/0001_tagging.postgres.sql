-- 0001_tagging: the tag library, customer tags and history, WeCom sync bookkeeping, saved audiences (tagging.models).
CREATE TABLE "tagging_group" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL,
    "order" INT NOT NULL DEFAULT 0,
    "colour" VARCHAR(16) NOT NULL DEFAULT '',
    "description" VARCHAR(255) NOT NULL DEFAULT '',
    "owner" VARCHAR(64) NOT NULL DEFAULT '',
    "origin" VARCHAR(8) NOT NULL DEFAULT 'siyu',
    "sync_to_wecom" BOOL NOT NULL DEFAULT FALSE,
    "wecom_group_id" VARCHAR(64) UNIQUE,
    "strategy_id" INT,
    "push_pending" BOOL NOT NULL DEFAULT FALSE,
    "synced_at" TIMESTAMPTZ,
    "deleted_at" TIMESTAMPTZ
);
CREATE TABLE "tagging_tag" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "group_id" BIGINT NOT NULL REFERENCES "tagging_group" ("id") ON DELETE RESTRICT,
    "name" VARCHAR(64) NOT NULL,
    "order" INT NOT NULL DEFAULT 0,
    "colour" VARCHAR(16) NOT NULL DEFAULT '',
    "description" VARCHAR(255) NOT NULL DEFAULT '',
    "owner" VARCHAR(64) NOT NULL DEFAULT '',
    "origin" VARCHAR(8) NOT NULL DEFAULT 'siyu',
    "wecom_tag_id" VARCHAR(64) UNIQUE,
    "push_pending" BOOL NOT NULL DEFAULT FALSE,
    "synced_at" TIMESTAMPTZ,
    "deleted_at" TIMESTAMPTZ
);
CREATE TABLE "tagging_customer_tag" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "customer_id" BIGINT NOT NULL REFERENCES "bot_customer" ("id") ON DELETE CASCADE,
    "tag_id" BIGINT NOT NULL REFERENCES "tagging_tag" ("id") ON DELETE CASCADE,
    "source" VARCHAR(8) NOT NULL,
    "applied_by" VARCHAR(96) NOT NULL,
    "applied_at" TIMESTAMPTZ NOT NULL,
    "reason" JSONB NOT NULL,
    "advisor_userid" VARCHAR(64),
    "expires_at" TIMESTAMPTZ
);
CREATE TABLE "tagging_customer_tag_history" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "customer_id" BIGINT NOT NULL,
    "tag_id" BIGINT NOT NULL,
    "action" VARCHAR(8) NOT NULL,
    "source" VARCHAR(8) NOT NULL,
    "actor" VARCHAR(96) NOT NULL,
    "reason" JSONB NOT NULL,
    "at" TIMESTAMPTZ NOT NULL
);
CREATE TABLE "tagging_sync_request" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "key" VARCHAR(160) NOT NULL UNIQUE,
    "kind" VARCHAR(16) NOT NULL,
    "wecom_id" VARCHAR(64) NOT NULL DEFAULT '',
    "advisor_userid" VARCHAR(64) NOT NULL DEFAULT '',
    "change_type" VARCHAR(32) NOT NULL DEFAULT '',
    "attempts" INT NOT NULL DEFAULT 0,
    "last_error" VARCHAR(255) NOT NULL DEFAULT '',
    "done_at" TIMESTAMPTZ
);
CREATE TABLE "tagging_sync_run" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "kind" VARCHAR(16) NOT NULL,
    "started_at" TIMESTAMPTZ NOT NULL,
    "finished_at" TIMESTAMPTZ,
    "ok" BOOL NOT NULL DEFAULT FALSE,
    "changes" JSONB NOT NULL,
    "error" VARCHAR(255) NOT NULL DEFAULT ''
);
CREATE TABLE "tagging_audience" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "expr" TEXT NOT NULL,
    "created_by" VARCHAR(96) NOT NULL DEFAULT ''
);
CREATE UNIQUE INDEX "uid_tagging_customer_tag_customer_tag" ON "tagging_customer_tag" ("customer_id", "tag_id");
CREATE INDEX "idx_tagging_customer_tag_tag" ON "tagging_customer_tag" ("tag_id", "customer_id");
CREATE INDEX "idx_tagging_tag_group" ON "tagging_tag" ("group_id");
CREATE INDEX "idx_tagging_history_customer" ON "tagging_customer_tag_history" ("customer_id");
CREATE INDEX "idx_tagging_history_tag" ON "tagging_customer_tag_history" ("tag_id");
CREATE INDEX "idx_tagging_sync_request_done" ON "tagging_sync_request" ("done_at");

-- 0001_sop: campaigns, their versions and steps, enrolments, touches and opt-outs (sop.models).
CREATE TABLE "sop_campaign" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL,
    "description" VARCHAR(255) NOT NULL DEFAULT '',
    "owner" VARCHAR(96) NOT NULL,
    "owner_name" VARCHAR(128) NOT NULL DEFAULT '',
    "segment" VARCHAR(16) NOT NULL DEFAULT 'all',
    "status" VARCHAR(16) NOT NULL DEFAULT 'draft',
    "current_version" INT NOT NULL DEFAULT 0,
    "latest_version" INT NOT NULL DEFAULT 1,
    "activated_at" TIMESTAMP,
    "paused_at" TIMESTAMP,
    "archived_at" TIMESTAMP
);
CREATE TABLE "sop_campaign_version" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "campaign_id" BIGINT NOT NULL REFERENCES "sop_campaign" ("id") ON DELETE CASCADE,
    "version" INT NOT NULL,
    "status" VARCHAR(20) NOT NULL DEFAULT 'draft',
    "trigger" JSON,
    "audience" TEXT,
    "reentry" VARCHAR(16) NOT NULL DEFAULT 'never',
    "exit_conditions" JSON NOT NULL,
    "goal" JSON,
    "product" JSON,
    "timezone" VARCHAR(40) NOT NULL DEFAULT 'Asia/Shanghai',
    "created_by" VARCHAR(96) NOT NULL DEFAULT '',
    "submitted_by" VARCHAR(96),
    "submitted_at" TIMESTAMP,
    "approved_by" VARCHAR(96),
    "approved_at" TIMESTAMP,
    "approval_comment" TEXT NOT NULL DEFAULT '',
    "activated_at" TIMESTAMP,
    "findings" JSON NOT NULL
);
CREATE TABLE "sop_campaign_step" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "version_id" BIGINT NOT NULL REFERENCES "sop_campaign_version" ("id") ON DELETE CASCADE,
    "position" INT NOT NULL,
    "name" VARCHAR(64) NOT NULL DEFAULT '',
    "anchor" VARCHAR(8) NOT NULL DEFAULT 'entry',
    "offset_days" INT NOT NULL DEFAULT 0,
    "offset_minutes" INT NOT NULL DEFAULT 0,
    "at_time" VARCHAR(5),
    "window_start" VARCHAR(5) NOT NULL DEFAULT '08:00',
    "window_end" VARCHAR(5) NOT NULL DEFAULT '21:00',
    "skip_weekends" INT NOT NULL DEFAULT 0,
    "skip_holidays" INT NOT NULL DEFAULT 0,
    "delivery" VARCHAR(16) NOT NULL DEFAULT 'mass_send',
    "content" JSON NOT NULL
);
CREATE TABLE "sop_enrolment" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "campaign_id" BIGINT NOT NULL REFERENCES "sop_campaign" ("id") ON DELETE CASCADE,
    "version_id" BIGINT NOT NULL REFERENCES "sop_campaign_version" ("id") ON DELETE CASCADE,
    "customer" VARCHAR(64) NOT NULL,
    "advisor" VARCHAR(64) NOT NULL,
    "entered_at" TIMESTAMP NOT NULL,
    "trigger_ref" VARCHAR(160) NOT NULL DEFAULT '',
    "state" VARCHAR(16) NOT NULL DEFAULT 'active',
    "exit_reason" VARCHAR(64),
    "exited_at" TIMESTAMP,
    "goal_reached_at" TIMESTAMP,
    "updated_at" TIMESTAMP NOT NULL
);
CREATE TABLE "sop_touch" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "enrolment_id" BIGINT NOT NULL REFERENCES "sop_enrolment" ("id") ON DELETE CASCADE,
    "step_id" BIGINT NOT NULL REFERENCES "sop_campaign_step" ("id") ON DELETE CASCADE,
    "version_id" BIGINT NOT NULL REFERENCES "sop_campaign_version" ("id") ON DELETE CASCADE,
    "campaign_id" BIGINT NOT NULL REFERENCES "sop_campaign" ("id") ON DELETE CASCADE,
    "customer" VARCHAR(64) NOT NULL,
    "advisor" VARCHAR(64) NOT NULL,
    "due_at" TIMESTAMP NOT NULL,
    "state" VARCHAR(16) NOT NULL DEFAULT 'planned',
    "reason" VARCHAR(64),
    "outbox_id" BIGINT,
    "msgid" VARCHAR(128),
    "jobid" VARCHAR(128),
    "reminded_at" TIMESTAMP,
    "sent_at" TIMESTAMP,
    "confirmed_at" TIMESTAMP,
    "replied_at" TIMESTAMP,
    "attempts" INT NOT NULL DEFAULT 0,
    "updated_at" TIMESTAMP NOT NULL
);
CREATE TABLE "sop_opt_out" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "customer" VARCHAR(64) NOT NULL UNIQUE,
    "source" VARCHAR(16) NOT NULL,
    "reason" VARCHAR(255) NOT NULL DEFAULT '',
    "by_actor" VARCHAR(96) NOT NULL DEFAULT ''
);
CREATE INDEX "idx_sop_campaign_status" ON "sop_campaign" ("status");
CREATE UNIQUE INDEX "uid_sop_campaign_version" ON "sop_campaign_version" ("campaign_id", "version");
CREATE UNIQUE INDEX "uid_sop_campaign_step_position" ON "sop_campaign_step" ("version_id", "position");
CREATE INDEX "idx_sop_enrolment_campaign_customer_state" ON "sop_enrolment" ("campaign_id", "customer", "state");
CREATE INDEX "idx_sop_enrolment_version_state" ON "sop_enrolment" ("version_id", "state");
CREATE INDEX "idx_sop_enrolment_customer" ON "sop_enrolment" ("customer", "state");
CREATE UNIQUE INDEX "uid_sop_touch_enrolment_step" ON "sop_touch" ("enrolment_id", "step_id");
CREATE INDEX "idx_sop_touch_state_due" ON "sop_touch" ("state", "due_at");
CREATE INDEX "idx_sop_touch_version_step_state" ON "sop_touch" ("version_id", "step_id", "state");
CREATE INDEX "idx_sop_touch_campaign_state" ON "sop_touch" ("campaign_id", "state");
CREATE INDEX "idx_sop_touch_customer" ON "sop_touch" ("customer", "due_at");

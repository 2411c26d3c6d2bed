-- 0002_rules: auto-tag rules (tagging.models.TagRule).
CREATE TABLE "tagging_rule" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "trigger" VARCHAR(16) NOT NULL,
    "spec" JSONB NOT NULL,
    "enabled" BOOL NOT NULL DEFAULT FALSE,
    "created_by" VARCHAR(96) NOT NULL DEFAULT '',
    "last_run_at" TIMESTAMPTZ,
    "last_run_applied" INT NOT NULL DEFAULT 0
);
CREATE INDEX "idx_tagging_rule_trigger" ON "tagging_rule" ("trigger", "enabled");
CREATE INDEX "idx_tagging_customer_tag_expires" ON "tagging_customer_tag" ("expires_at");

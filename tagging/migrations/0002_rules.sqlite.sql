-- 0002_rules: auto-tag rules (tagging.models.TagRule).
CREATE TABLE "tagging_rule" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "trigger" VARCHAR(16) NOT NULL,
    "spec" JSON NOT NULL,
    "enabled" INT NOT NULL DEFAULT 0,
    "created_by" VARCHAR(96) NOT NULL DEFAULT '',
    "last_run_at" TIMESTAMP,
    "last_run_applied" INT NOT NULL DEFAULT 0
);
CREATE INDEX "idx_tagging_rule_trigger" ON "tagging_rule" ("trigger", "enabled");
CREATE INDEX "idx_tagging_customer_tag_expires" ON "tagging_customer_tag" ("expires_at");

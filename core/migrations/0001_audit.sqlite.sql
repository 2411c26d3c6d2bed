-- The hash-chained audit log (core.audit) and its one-row head.  Append-only: the
-- application inserts and reads entries, never updates or deletes them.
CREATE TABLE "core_audit_log" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "seq" BIGINT NOT NULL UNIQUE,
    "at" TIMESTAMP NOT NULL,
    "actor_kind" VARCHAR(16) NOT NULL,
    "actor_id" VARCHAR(64) NOT NULL,
    "actor_name" VARCHAR(128) NOT NULL DEFAULT '',
    "action" VARCHAR(64) NOT NULL,
    "target" VARCHAR(128) NOT NULL DEFAULT '',
    "result" VARCHAR(32) NOT NULL DEFAULT 'ok',
    "source" VARCHAR(64) NOT NULL DEFAULT '',
    "detail" TEXT NOT NULL DEFAULT '{}',
    "prev_hash" VARCHAR(64) NOT NULL,
    "hash" VARCHAR(64) NOT NULL UNIQUE
);
CREATE INDEX "idx_core_audit_action" ON "core_audit_log" ("action");
CREATE INDEX "idx_core_audit_at" ON "core_audit_log" ("at");
CREATE INDEX "idx_core_audit_actor" ON "core_audit_log" ("actor_kind", "actor_id");
CREATE TABLE "core_audit_head" (
    "id" INTEGER PRIMARY KEY NOT NULL,
    "seq" BIGINT NOT NULL DEFAULT 0,
    "hash" VARCHAR(64) NOT NULL,
    "updated_at" TIMESTAMP NOT NULL
);
INSERT INTO "core_audit_head" ("id", "seq", "hash", "updated_at")
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', CURRENT_TIMESTAMP);

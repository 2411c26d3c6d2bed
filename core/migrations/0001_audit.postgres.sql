-- The hash-chained audit log (core.audit) and its one-row head.  Append-only: the
-- application inserts and reads entries, never updates or deletes them; grant the
-- application's role accordingly (docs/audit.md):
--   GRANT SELECT, INSERT ON core_audit_log TO siyu_app;
--   GRANT USAGE ON SEQUENCE core_audit_log_id_seq TO siyu_app;
--   GRANT SELECT, UPDATE ON core_audit_head TO siyu_app;
CREATE TABLE "core_audit_log" (
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "seq" BIGINT NOT NULL UNIQUE,
    "at" TIMESTAMPTZ NOT NULL,
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
    "id" INT NOT NULL PRIMARY KEY,
    "seq" BIGINT NOT NULL DEFAULT 0,
    "hash" VARCHAR(64) NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL
);
INSERT INTO "core_audit_head" ("id", "seq", "hash", "updated_at")
VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000', now());

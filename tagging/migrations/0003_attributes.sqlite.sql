-- 0003_attributes: custom attribute fields, sensitive attributes sealed at rest, import history (tagging.models).
CREATE TABLE "tagging_attribute_field" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "label" VARCHAR(64) NOT NULL DEFAULT '',
    "type" VARCHAR(8) NOT NULL,
    "required" INT NOT NULL DEFAULT 0,
    "minimum" VARCHAR(40),
    "maximum" VARCHAR(40),
    "enum_values" JSON NOT NULL,
    "max_length" INT NOT NULL DEFAULT 64,
    "masked_by_role" INT NOT NULL DEFAULT 0,
    "sensitive" INT NOT NULL DEFAULT 0,
    "bands" JSON NOT NULL,
    "created_by" VARCHAR(96) NOT NULL DEFAULT ''
);
CREATE TABLE "tagging_sealed_attribute" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "customer_id" BIGINT NOT NULL REFERENCES "bot_customer" ("id") ON DELETE CASCADE,
    "name" VARCHAR(64) NOT NULL,
    "sealed" TEXT NOT NULL
);
CREATE UNIQUE INDEX "uid_tagging_sealed_attribute_customer_name" ON "tagging_sealed_attribute" ("customer_id", "name");
CREATE TABLE "tagging_import" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "actor" VARCHAR(96) NOT NULL,
    "actor_name" VARCHAR(96) NOT NULL DEFAULT '',
    "source" VARCHAR(16) NOT NULL,
    "filename" VARCHAR(255) NOT NULL DEFAULT '',
    "started_at" TIMESTAMP NOT NULL,
    "finished_at" TIMESTAMP,
    "status" VARCHAR(16) NOT NULL DEFAULT 'running',
    "rows" INT NOT NULL DEFAULT 0,
    "accepted" INT NOT NULL DEFAULT 0,
    "unchanged" INT NOT NULL DEFAULT 0,
    "rejected" INT NOT NULL DEFAULT 0
);
CREATE INDEX "idx_tagging_import_started" ON "tagging_import" ("started_at");
CREATE TABLE "tagging_import_reject" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "batch_id" BIGINT NOT NULL REFERENCES "tagging_import" ("id") ON DELETE CASCADE,
    "row" INT NOT NULL,
    "key" VARCHAR(16) NOT NULL DEFAULT '',
    "who" VARCHAR(64) NOT NULL DEFAULT '',
    "error" VARCHAR(255) NOT NULL
);
CREATE INDEX "idx_tagging_import_reject_batch" ON "tagging_import_reject" ("batch_id", "row");

CREATE TABLE "stub_note" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "message_id" BIGINT NOT NULL UNIQUE,
    "customer" VARCHAR(64),
    "text_masked" TEXT NOT NULL,
    "outcome" VARCHAR(16) NOT NULL DEFAULT '',
    "wecom_answer" JSONB
);

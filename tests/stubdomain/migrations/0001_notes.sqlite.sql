CREATE TABLE "stub_note" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "message_id" BIGINT NOT NULL UNIQUE,
    "customer" VARCHAR(64),
    "text_masked" TEXT NOT NULL,
    "outcome" VARCHAR(16) NOT NULL DEFAULT '',
    "wecom_answer" JSON
);

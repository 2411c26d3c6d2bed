-- The archive cursor carries a fencing token: each pull claims the cursor by
-- incrementing it, and moves the cursor only while its claim is still the latest,
-- so a puller whose Redis lock expired mid-pull cannot write after another took over.
ALTER TABLE "bot_archive_cursor" ADD COLUMN "fence" BIGINT NOT NULL DEFAULT 0;

-- The compliance review workflow over bot_review_case: who the case is assigned to,
-- the reviewer's decision (confirmed / false_positive / escalated) with its mandatory
-- comment, who decided and when. The assignee and decider are console operators
-- (admin's table): kept as id + name, not a foreign key, because bot sits below admin.
-- (status, created_at) serves the queue: open cases, oldest first.
ALTER TABLE "bot_review_case" ADD COLUMN "assignee_id" BIGINT;
ALTER TABLE "bot_review_case" ADD COLUMN "assignee_name" VARCHAR(128) NOT NULL DEFAULT '';
ALTER TABLE "bot_review_case" ADD COLUMN "decision_comment" TEXT NOT NULL DEFAULT '';
ALTER TABLE "bot_review_case" ADD COLUMN "decided_by" VARCHAR(128) NOT NULL DEFAULT '';
ALTER TABLE "bot_review_case" ADD COLUMN "decided_at" TIMESTAMP;
CREATE INDEX "idx_bot_review__status_created" ON "bot_review_case" ("status", "created_at");
CREATE INDEX "idx_bot_review__decided_at" ON "bot_review_case" ("decided_at");

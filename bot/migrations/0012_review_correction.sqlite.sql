-- A reviewer corrects a confirmed case's category (issue 10): the categories the
-- pipeline found stay in "categories"; the corrected ones, who corrected them, when and
-- why (a mandatory comment) sit beside them. The labelled data exported for the next
-- model (siyu review export-labels) uses the corrected categories.
ALTER TABLE "bot_review_case" ADD COLUMN "corrected_categories" JSON;
ALTER TABLE "bot_review_case" ADD COLUMN "corrected_by" VARCHAR(128) NOT NULL DEFAULT '';
ALTER TABLE "bot_review_case" ADD COLUMN "corrected_at" TIMESTAMP;
ALTER TABLE "bot_review_case" ADD COLUMN "correction_comment" TEXT NOT NULL DEFAULT '';

-- 0004_field_edit: a custom attribute's description, and its retirement (tagging.models.AttributeField).
ALTER TABLE "tagging_attribute_field" ADD COLUMN "description" VARCHAR(255) NOT NULL DEFAULT '';
ALTER TABLE "tagging_attribute_field" ADD COLUMN "retired_at" TIMESTAMPTZ;
ALTER TABLE "tagging_attribute_field" ADD COLUMN "retired_by" VARCHAR(96) NOT NULL DEFAULT '';

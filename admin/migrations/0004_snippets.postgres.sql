-- The compliant reply library (合规话术库, admin.snippets): snippets marketing writes and
-- compliance approves (who, when, under which rules), re-checked when the lexicon
-- changes, sent from the sidebar; images kept here and uploaded to WeCom as temporary
-- media when needed (a media id lives 3 days).
CREATE TABLE "admin_snippet" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "title" VARCHAR(64) NOT NULL,
    "topic" VARCHAR(32) NOT NULL,
    "segment" VARCHAR(32) NOT NULL DEFAULT '',
    -- text | image | link | miniprogram
    "kind" VARCHAR(16) NOT NULL,
    "text" TEXT NOT NULL DEFAULT '',
    "link_title" VARCHAR(128) NOT NULL DEFAULT '',
    "link_url" VARCHAR(1024) NOT NULL DEFAULT '',
    "link_desc" VARCHAR(512) NOT NULL DEFAULT '',
    "link_picurl" VARCHAR(1024) NOT NULL DEFAULT '',
    "mp_appid" VARCHAR(64) NOT NULL DEFAULT '',
    "mp_title" VARCHAR(64) NOT NULL DEFAULT '',
    "mp_page" VARCHAR(256) NOT NULL DEFAULT '',
    "image" BYTEA,
    "image_name" VARCHAR(128) NOT NULL DEFAULT '',
    "image_type" VARCHAR(32) NOT NULL DEFAULT '',
    "media_id" VARCHAR(128),
    "media_uploaded_at" TIMESTAMPTZ,
    -- pending | approved | rejected | withdrawn | disabled
    "status" VARCHAR(16) NOT NULL DEFAULT 'pending',
    "status_reason" TEXT NOT NULL DEFAULT '',
    -- Bumped by every edit: an approval or a withdrawal names the text it judged.
    "revision" INT NOT NULL DEFAULT 1,
    "created_by" VARCHAR(128) NOT NULL DEFAULT '',
    "updated_by" VARCHAR(128) NOT NULL DEFAULT '',
    "approved_by" VARCHAR(128) NOT NULL DEFAULT '',
    "approved_at" TIMESTAMPTZ,
    -- The rules it was approved under (shipped lexicon, the institution's overlay).
    "approved_rules" VARCHAR(255) NOT NULL DEFAULT '',
    "checked_rules" VARCHAR(255) NOT NULL DEFAULT '',
    "checked_at" TIMESTAMPTZ,
    "use_count" BIGINT NOT NULL DEFAULT 0,
    "last_used_at" TIMESTAMPTZ
);
CREATE INDEX "idx_admin_snipp_status_topic" ON "admin_snippet" ("status", "topic");

-- The lexicon compliance owns (admin.lexicon): the working draft of the institution's
-- overlay over the shipped rules, and every published version (who, when, why, what it
-- changed, the dry run it passed). Publishing also writes bot_rules_overlay, which the
-- analyzers follow; these tables are the console's history of it.
CREATE TABLE "admin_lexicon_entry" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    -- Stable across versions and roll-backs: a term's code is its findings' rule_id.
    "code" VARCHAR(16) NOT NULL UNIQUE,
    -- term | exception | basis | rewording | segment
    "kind" VARCHAR(16) NOT NULL,
    "text" VARCHAR(200) NOT NULL,
    "body" TEXT NOT NULL DEFAULT '',
    "category" VARCHAR(32) NOT NULL DEFAULT '',
    "categories" JSONB NOT NULL,
    "basis" VARCHAR(32) NOT NULL DEFAULT '',
    "severity" VARCHAR(16) NOT NULL DEFAULT 'violation',
    "segment" VARCHAR(32) NOT NULL DEFAULT '',
    "suggestion" TEXT NOT NULL DEFAULT '',
    "note" TEXT NOT NULL DEFAULT '',
    "updated_by" VARCHAR(128) NOT NULL DEFAULT '',
    CONSTRAINT "uid_admin_lexic_kind_text_segment" UNIQUE ("kind", "text", "segment")
);
CREATE TABLE "admin_lexicon_version" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "number" INT NOT NULL UNIQUE,
    "reason" TEXT NOT NULL,
    "published_by_id" BIGINT,
    "published_by" VARCHAR(128) NOT NULL DEFAULT '',
    -- The draft's entries as published (what a diff and a roll-back read).
    "entries" JSONB NOT NULL,
    -- compliance_nlp.overlay's document built from them.
    "document" TEXT NOT NULL,
    -- The shipped rules it was published over (lexicon / bases versions).
    "base_version" VARCHAR(128) NOT NULL DEFAULT '',
    "rollback_of" INT,
    -- The dry run it passed: counts, the data set, lines added / removed.
    "effect" JSONB
);

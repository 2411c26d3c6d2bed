-- The institution's rule overlay the analyzers run (compliance_nlp.overlay): one row per
-- published version, newest last. The console's lexicon pages (admin) publish here in
-- the publishing transaction; every process with an analyzer reads the newest row at
-- start and polls it (bot.rules_overlay). The shipped rules stay in the package: this
-- is only what the institution adds, so it survives upgrades.
CREATE TABLE "bot_rules_overlay" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "version" VARCHAR(32) NOT NULL UNIQUE,
    "document" TEXT NOT NULL,
    "published_by" VARCHAR(128) NOT NULL DEFAULT ''
);

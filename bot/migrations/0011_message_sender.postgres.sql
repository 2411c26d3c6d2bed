-- Every message ingested through the API records which key sent it (issue 10): the
-- caller as the audit log names it, "api_key:<key id>" (admin's api key; no foreign
-- key, bot sits below admin). NULL for the archive puller, callbacks and the CLI.
ALTER TABLE "bot_message" ADD COLUMN "ingested_by" VARCHAR(80);

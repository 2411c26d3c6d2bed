-- 0002_engine: what the SOP engine looks rows up by, and what keeps it idempotent.
-- One enrolment per (campaign, customer, trigger): a trigger seen twice (a redelivered
-- event, a rerun of the daily date job, a crashed audience snapshot run again) enrols once.
CREATE UNIQUE INDEX "uid_sop_enrolment_trigger" ON "sop_enrolment" ("campaign_id", "customer", "trigger_ref");
-- A settled outbox row finds its touches (a digest or a mass-send task carries several).
CREATE INDEX "idx_sop_touch_outbox" ON "sop_touch" ("outbox_id");
-- Mass-send results are read back by the task's msgid.
CREATE INDEX "idx_sop_touch_msgid" ON "sop_touch" ("msgid");

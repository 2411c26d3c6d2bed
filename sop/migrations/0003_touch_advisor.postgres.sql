-- 0003_touch_advisor: the scheduler takes all due touches of a few advisors per batch (so
-- each advisor gets one digest of many touches); this index answers that claim.
CREATE INDEX "idx_sop_touch_advisor_state_due" ON "sop_touch" ("advisor", "state", "due_at");

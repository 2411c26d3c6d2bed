-- One thing's entries, newest first: the case page and the customer page read them
-- on every view (core.audit._target_entries) — by target, ordered by seq.
CREATE INDEX "idx_core_audit_target_seq" ON "core_audit_log" ("target", "seq");

-- 0005_tag_name: tags by name (audience expressions name tags; a preview reads the live ids of its names in its query).
CREATE INDEX "idx_tagging_tag_name" ON "tagging_tag" ("name");

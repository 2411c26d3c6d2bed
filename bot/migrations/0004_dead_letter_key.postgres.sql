-- A dead letter keeps its entry's dedup key whole, however long: the key is the AAD
-- of the sealed payload (cut, it could never be opened or requeued), and an entry
-- whose key did not fit the old VARCHAR(160) failed its dead-letter write forever.
ALTER TABLE "bot_dead_letter" ALTER COLUMN "dedup_key" TYPE TEXT;

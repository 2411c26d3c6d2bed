-- 0004_touch_sidebar: a touch the advisor sent from the chat sidebar records how, by whom
-- (and when, in sent_at): a reminder's digest only told the advisor, the sidebar's send is
-- what reached the customer.
ALTER TABLE "sop_touch" ADD COLUMN "sent_via" VARCHAR(16);
ALTER TABLE "sop_touch" ADD COLUMN "sent_by" VARCHAR(96);

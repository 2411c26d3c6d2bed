-- The dashboard's daily rollups, kept by the admin domain's on_message hook in the
-- transaction that stores each message (admin.dashboard), so the page reads a few
-- hundred rows instead of scanning bot_message.  `siyu dashboard rebuild` recomputes
-- them from the stored rows.  A day is a calendar day in Asia/Shanghai.
CREATE TABLE "admin_dash_daily" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "day" VARCHAR(10) NOT NULL,
    "metric" VARCHAR(32) NOT NULL,
    "dim" VARCHAR(64) NOT NULL DEFAULT '',
    "n" BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT "uid_admin_dash__day_metric_dim" UNIQUE ("day", "metric", "dim")
);
-- Customers seen per day (distinct), by a SHA-256 of the external_userid (erasing a customer leaves no id here): the
-- "customers per day" counter goes up only when this insert adds a row.
CREATE TABLE "admin_dash_customer_day" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "day" VARCHAR(10) NOT NULL,
    "customer" VARCHAR(64) NOT NULL,
    CONSTRAINT "uid_admin_dash__day_customer" UNIQUE ("day", "customer")
);

-- Operators (console sign-in) and named API keys.
CREATE TABLE "admin_operator" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "display_name" VARCHAR(64) NOT NULL DEFAULT '',
    "role" VARCHAR(16) NOT NULL,
    "password_hash" VARCHAR(255) NOT NULL,
    "must_change_password" INT NOT NULL DEFAULT 0,
    "status" VARCHAR(16) NOT NULL DEFAULT 'active',
    "totp_sealed" TEXT,
    "totp_enabled_at" TIMESTAMP,
    "wecom_userid" VARCHAR(64),
    "session_epoch" INT NOT NULL DEFAULT 0,
    "last_login_at" TIMESTAMP
);
CREATE TABLE "admin_api_key" (
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL,
    "key_id" VARCHAR(16) NOT NULL UNIQUE,
    "secret_hash" VARCHAR(64) NOT NULL,
    "scopes" JSON NOT NULL,
    "allowed_ips" JSON NOT NULL,
    "expires_at" TIMESTAMP,
    "created_by" VARCHAR(80) NOT NULL DEFAULT '',
    "revoked_at" TIMESTAMP,
    "revoked_by" VARCHAR(80),
    "last_used_at" TIMESTAMP,
    "last_used_from" VARCHAR(64)
);
CREATE INDEX "idx_admin_api_key_name" ON "admin_api_key" ("name");

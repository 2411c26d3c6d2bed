-- Operators (console sign-in) and named API keys.
CREATE TABLE "admin_operator" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "display_name" VARCHAR(64) NOT NULL DEFAULT '',
    "role" VARCHAR(16) NOT NULL,
    "password_hash" VARCHAR(255) NOT NULL,
    "must_change_password" BOOL NOT NULL DEFAULT FALSE,
    "status" VARCHAR(16) NOT NULL DEFAULT 'active',
    "totp_sealed" TEXT,
    "totp_enabled_at" TIMESTAMPTZ,
    "wecom_userid" VARCHAR(64),
    "session_epoch" INT NOT NULL DEFAULT 0,
    "last_login_at" TIMESTAMPTZ
);
CREATE TABLE "admin_api_key" (
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "id" BIGSERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL,
    "key_id" VARCHAR(16) NOT NULL UNIQUE,
    "secret_hash" VARCHAR(64) NOT NULL,
    "scopes" JSONB NOT NULL,
    "allowed_ips" JSONB NOT NULL,
    "expires_at" TIMESTAMPTZ,
    "created_by" VARCHAR(80) NOT NULL DEFAULT '',
    "revoked_at" TIMESTAMPTZ,
    "revoked_by" VARCHAR(80),
    "last_used_at" TIMESTAMPTZ,
    "last_used_from" VARCHAR(64)
);
CREATE INDEX "idx_admin_api_key_name" ON "admin_api_key" ("name");

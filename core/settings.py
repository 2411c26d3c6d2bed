"""One settings object for the whole process.

Built once in ``main()`` (or a test fixture) and passed down; nothing reads the
environment at import time.  Environment variables use the ``SIYU_`` prefix and
``__`` between a group and its field, e.g. ``SIYU_WECOM__CORP_ID``.  A
``siyu.toml`` or ``.env`` in the working directory is read too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

WECOM_API_BASE_URL = "https://qyapi.weixin.qq.com"

Role = Literal["receiver", "worker", "scheduler", "admin"]
ALL_ROLES: tuple[Role, ...] = ("receiver", "worker", "scheduler", "admin")


class SettingsError(RuntimeError):
    """A setting is missing or wrong; the message names the variable."""


class HttpSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8080
    # WeCom posts small XML documents; anything larger is refused with 413.
    max_body_bytes: int = 1024 * 1024
    # /readyz and /metrics tell whoever asks what runs and how busy it is, and each
    # scrape costs queries: on an internet-facing receiver they belong on an internal
    # listener.  Unset: served on the public listener, as before.  Set: served only
    # on ops_host:ops_port (loopback by default; 0 = any free port) and the public
    # listener keeps /healthz alone.
    ops_port: int | None = Field(default=None, ge=0, le=65535)
    ops_host: str = "127.0.0.1"
    # When set, /readyz and /metrics (wherever served) want "Authorization: Bearer
    # <token>"; /healthz stays open for liveness probes.
    ops_token: SecretStr = SecretStr("")


class WeComSettings(BaseModel):
    corp_id: str = ""
    token: SecretStr = SecretStr("")
    encoding_aes_key: SecretStr = SecretStr("")
    api_base_url: str = WECOM_API_BASE_URL
    agent_id: int = 0
    app_secret: SecretStr = SecretStr("")
    contact_secret: SecretStr = SecretStr("")
    # WeCom documents no freshness window; 0 disables the check.  Retries of the
    # same callback carry the original timestamp and arrive within ~20 s.
    callback_max_skew_s: int = 300
    # Seconds a callback dedup key is remembered (the DB unique key covers the rest).
    dedup_ttl_s: int = 3 * 24 * 3600
    http_timeout_s: float = 10.0


class ArchiveSettings(BaseModel):
    """会话存档 puller: WeCom's finance SDK, or the sandbox's stand-in."""

    sdk: Literal["none", "native", "sandbox"] = "none"
    sdk_lib_path: str = ""
    secret: SecretStr = SecretStr("")
    # JSON object {"<publickey_ver>": "<path to PEM private key>"}.
    private_keys: dict[str, str] = Field(default_factory=dict)
    batch_size: int = 1000
    poll_interval_s: float = 60.0


class PipelineSettings(BaseModel):
    stream: str = "siyu:inbound"
    group: str = "siyu-workers"
    concurrency: int = 1
    # Entries read (and stored, in one transaction) at once, at most: fewer when fewer
    # wait.  A read's statements and hooks cost about the same whatever its length, so
    # under load a longer read costs less per message (bench/pipeline.py: 128 against 64
    # took the worker's and PostgreSQL's CPU per message from ~0.46 to ~0.31 ms).
    batch_size: int = 128
    # A pending entry idle this long belongs to a dead or stuck worker.
    claim_idle_ms: int = 30_000
    # Deliveries after which an entry goes to the dead-letter table.
    max_deliveries: int = 5


class OutboxSettings(BaseModel):
    poll_interval_s: float = 1.0
    max_attempts: int = 8
    lease_s: int = 120


class NlpSettings(BaseModel):
    intent_model_dir: str = ""
    violation_model_dir: str = ""
    use_model: bool = True
    pool_size: int = 1
    mask_style: str = "default"


class CryptoSettings(BaseModel):
    # JSON object {"<key id>": "<base64 of 32 bytes>"}; empty means a key file
    # under the data dir is created on first start (embedded mode only).
    keys: dict[str, SecretStr] = Field(default_factory=dict)
    active_key_id: str = ""


class ApiSettings(BaseModel):
    # Bearer token for machine-to-machine calls (archive ingest, integrations).
    token: SecretStr = SecretStr("")


class SopSettings(BaseModel):
    """The SOP engine (sop.engine): pacing, WeCom's limits as planned, lateness."""

    # How often the scheduler looks for due touches (it reruns at once while busy).
    scheduler_interval_s: float = Field(default=5.0, gt=0)
    # Touches claimed per batch (one transaction each).
    batch_size: int = Field(default=500, ge=1, le=5000)
    # SOP's share of WeCom's per-member app-message caps (30 a minute, 1,000 an hour):
    # the rest stays free for compliance alerts, which must never wait behind a digest.
    member_minute_cap: int = Field(default=20, ge=1, le=30)
    member_hour_cap: int = Field(default=800, ge=1, le=1000)
    # Mass sends a customer may receive per Beijing day, counted across campaigns.  WeCom
    # caps a customer per month (as many as the month has days), per week (7) or per day
    # (1), as the corp sets it; 1 a day fits every setting.
    mass_send_per_day: int = Field(default=1, ge=1, le=10)
    # Calls a minute the engine plans per API (WeCom: about 10,000 per API per corp,
    # shared with everything else siyu calls).
    api_per_minute: dict[str, int] = Field(default_factory=dict)
    api_default_per_minute: int = Field(default=6000, ge=1, le=10_000)
    # A touch not handed to WeCom this long after it was due is skipped as late rather
    # than sent with stale content (a birthday greeting the day after).
    late_after_s: int = Field(default=6 * 3600, ge=60)
    # Touches listed in one reminder digest (WeCom text messages: at most 2,048 bytes).
    digest_max_items: int = Field(default=15, ge=1, le=50)
    # Where the sidebar is served, for the deep links in reminders ("" = relative).
    public_base_url: str = ""
    # Mass-send tasks: read results back this often; nudge a member who has not
    # confirmed after remind_after_s (at most 3 reminders per task in 24 h).
    results_interval_s: float = Field(default=300.0, gt=0)
    remind_after_s: int = Field(default=4 * 3600, ge=600)
    # Where image, file and mini-program cover addresses of steps may be fetched from
    # (at save and before each send, by this server): a JSON list of host names.
    # "files.bank.example" allows that host alone, internal addresses included;
    # ".bank.example" allows it and every name under it when they resolve to public
    # addresses (never private, loopback, link-local/metadata).  Empty: none.
    media_hosts: list[str] = Field(default_factory=list)
    # A media fetch (connection, redirects and body) gives up after this long.
    media_fetch_timeout_s: float = Field(default=30.0, gt=0, le=300)
    # The operator's holiday calendar (JSON; docs/sop-engine.md): the years the State
    # Council's notice has fixed and the chinesecalendar package does not know yet, or
    # corrections to it.  "" = the package alone.
    holiday_file: str = ""


OperatorRole = Literal["advisor", "team_lead", "marketing", "compliance", "admin"]


def _totp_roles() -> list[OperatorRole]:
    return ["admin", "compliance"]


class AdminSettings(BaseModel):
    """The console and its sign-in (admin domain): cookies, sessions, throttling, TOTP."""

    # Secure cookies are sent over HTTPS only; false for plain-HTTP local use (the demo).
    cookie_secure: bool = True
    # A session ends after this long without a request, and in any case after max_s.
    session_idle_s: int = Field(default=30 * 60, ge=60)
    session_max_s: int = Field(default=12 * 3600, ge=300)
    # Failed sign-ins (password or TOTP) per account within window_s before it is
    # locked for lockout_s; per source address, a higher bar (one office NAT).
    login_max_failures: int = Field(default=5, ge=1)
    address_max_failures: int = Field(default=30, ge=1)
    login_window_s: int = Field(default=15 * 60, ge=1)
    lockout_s: int = Field(default=15 * 60, ge=1)
    # Roles that must sign in with a second factor (TOTP); set by the institution's
    # administrator in configuration, so a stolen console session cannot lower it.
    totp_required_roles: list[OperatorRole] = Field(default_factory=_totp_roles)
    # Reverse proxies (CIDRs) whose X-Forwarded-For is believed: the source address
    # of lockouts, API-key allow-lists and the audit log.
    trusted_proxies: list[str] = Field(default_factory=list)


class SidebarSettings(BaseModel):
    """The advisors' chat sidebar (admin.sidebar): WeCom OAuth and its short session."""

    # WeCom's OAuth page (open.weixin.qq.com); the demo and tests point it at the sandbox.
    oauth_base_url: str = "https://open.weixin.qq.com"
    # The origin WeCom opens the sidebar at (a 可信域名 of the app), e.g.
    # "https://siyu.bank.example": OAuth redirects go there and only its pages get an
    # agentConfig signature.  Empty: the request's own origin (fine on loopback).
    public_url: str = ""
    # Advisors sign in by WeCom alone (no password, no TOTP), so their session is short
    # and reaches only the sidebar and the routes it calls; WeCom signs them in again
    # silently when it ends.
    session_idle_s: int = Field(default=15 * 60, ge=60)
    session_max_s: int = Field(default=2 * 3600, ge=300)
    # A member signing in for the first time gets an advisor account (no password
    # sign-in to the console); off: only members an administrator linked may use it.
    auto_provision: bool = True


class CheckSettings(BaseModel):
    """``POST /api/v1/compliance/check``: its own analyzer capacity and rate limits."""

    # Analyzer processes kept for checks when the worker role runs in the same process,
    # so a burst of checks never waits behind (or slows) message intake; 0 = share.
    pool_size: int = Field(default=1, ge=0)
    # Checks waiting for that capacity beyond one per process; past it: 503 at once.
    max_waiting: int = Field(default=16, ge=0)
    # Fixed one-minute windows per API key and per signed-in operator (an advisor types
    # and the sidebar checks, debounced, about twice a second at most).
    per_key_per_minute: int = Field(default=600, ge=1)
    per_operator_per_minute: int = Field(default=120, ge=1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SIYU_",
        env_nested_delimiter="__",
        env_file=".env",
        toml_file="siyu.toml",
        extra="ignore",
    )

    data_dir: Path = Path("./var")
    database_url: str = ""
    redis_url: str = ""
    # Embedded Redis only: "always" = a callback answered "success" is on disk;
    # "everysec" trades up to a second of acknowledged callbacks on power loss
    # for throughput bounded by CPU instead of the disk's fsync latency.
    redis_fsync: Literal["always", "everysec"] = "always"
    # Shared Redis only: start even when its maxmemory-policy may evict keys (an
    # evicted stream entry is a message lost after WeCom was told "success"); the
    # default refuses to start unless the policy is noeviction (core.redis).
    redis_allow_eviction: bool = False
    log_level: str = "INFO"
    http: HttpSettings = Field(default_factory=HttpSettings)
    wecom: WeComSettings = Field(default_factory=WeComSettings)
    archive: ArchiveSettings = Field(default_factory=ArchiveSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    outbox: OutboxSettings = Field(default_factory=OutboxSettings)
    nlp: NlpSettings = Field(default_factory=NlpSettings)
    crypto: CryptoSettings = Field(default_factory=CryptoSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    admin: AdminSettings = Field(default_factory=AdminSettings)
    sop: SopSettings = Field(default_factory=SopSettings)
    sidebar: SidebarSettings = Field(default_factory=SidebarSettings)
    check: CheckSettings = Field(default_factory=CheckSettings)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            dotenv_settings,
            TomlConfigSettingsSource(settings_cls),
            file_secret_settings,
        )

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite://{(self.data_dir / 'siyu.sqlite3').as_posix()}"
        return self

    @property
    def embedded_redis(self) -> bool:
        return not self.redis_url

    def require_wecom_callback(self) -> None:
        """Fail at start-up, naming the variable, when callbacks cannot be verified."""
        missing = []
        if not self.wecom.corp_id:
            missing.append("SIYU_WECOM__CORP_ID")
        if not self.wecom.token.get_secret_value():
            missing.append("SIYU_WECOM__TOKEN")
        key = self.wecom.encoding_aes_key.get_secret_value()
        if not key:
            missing.append("SIYU_WECOM__ENCODING_AES_KEY")
        elif len(key) != 43:
            raise SettingsError(
                "SIYU_WECOM__ENCODING_AES_KEY must be the 43-character EncodingAESKey "
                f"from the WeCom app's callback settings (got {len(key)} characters)"
            )
        if missing:
            raise SettingsError("missing required setting(s): " + ", ".join(missing))

    def require_wecom_api(self) -> None:
        missing = []
        if not self.wecom.corp_id:
            missing.append("SIYU_WECOM__CORP_ID")
        if not self.wecom.app_secret.get_secret_value():
            missing.append("SIYU_WECOM__APP_SECRET")
        if not self.wecom.agent_id:
            missing.append("SIYU_WECOM__AGENT_ID")
        if missing:
            raise SettingsError("missing required setting(s): " + ", ".join(missing))

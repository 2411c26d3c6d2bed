"""``siyu demo``: every domain with embedded defaults, the fake WeCom API, the simulator.

Everything the demo needs is generated under its data dir at first start
(callback token and EncodingAESKey, app secret of the sandbox corp, archive
RSA key, API token) — none of it is a secret of any real corp.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import random
import secrets
import signal
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from bot.sandbox.archive import SandboxArchive, add_archive_routes
from bot.sandbox.fake_api import SandboxState, build_fake_wecom_app
from bot.sandbox.fake_api.seed import ADVISORS
from bot.sandbox.simulator import Simulator
from bot.wecom.crypto import CallbackCrypto
from core.server import start_site
from core.settings import Settings


async def demo_counts() -> dict[str, int]:
    from bot import models
    from sop import models as sop_models

    return {
        "customers": await models.Customer.all().count(),
        "messages": await models.Message.all().count(),
        "violations": await models.Message.filter(has_violation=True).count(),
        "alerts": await models.Alert.all().count(),
        "app_messages_sent": await models.OutboxItem.filter(state="done").count(),
        "sop_enrolments": await sop_models.Enrolment.all().count(),
        "sop_touches": await sop_models.Touch.all().count(),
        "sop_digests_sent": await models.OutboxItem.filter(
            origin__startswith="sop.digest:", state="done"
        ).count(),
    }


async def _print_status(stop: asyncio.Event, state: SandboxState, every_s: float = 10.0) -> None:
    """One line every few seconds, so a newcomer sees the loop turning."""
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), timeout=every_s)
        except TimeoutError:
            pass
        try:
            c = await demo_counts()
        except Exception:  # noqa: BLE001 - the DB is closing at shutdown
            return
        print("  ".join(f"{k}={v}" for k, v in c.items()), flush=True)


def _demo_secrets(data_dir: Path) -> dict[str, Any]:
    path = data_dir / "demo-secrets.json"
    if path.exists():
        return dict(json.loads(path.read_text()))
    data_dir.mkdir(parents=True, exist_ok=True)
    values = {
        "corp_id": "wwsandbox0000000001",
        "token": secrets.token_urlsafe(16),
        "encoding_aes_key": base64.b64encode(secrets.token_bytes(32)).decode()[:43],
        "app_secret": "sandbox-app-" + secrets.token_urlsafe(16),
        "contact_secret": "sandbox-contact-" + secrets.token_urlsafe(16),
        "api_token": secrets.token_urlsafe(24),
    }
    _write_secrets(path, values)
    return values


# One operator per kind of console user, so a newcomer can sign in as each at once.
DEMO_OPERATORS = (
    ("admin", "admin", "管理员"),
    ("compliance", "compliance", "合规审核"),
    ("marketing", "marketing", "运营"),
    ("advisor", "advisor", "客户经理"),
)
# The demo's advisor account is the sandbox corp's first advisor in WeCom, so signing
# in as it shows that advisor's own review cases (an advisor's reach is its userid).
DEMO_ADVISOR_USERID = ADVISORS[0][0]


async def _seed_operators(data_dir: Path, demo: dict[str, Any]) -> str:
    """Create the demo's operators once; their random passwords live in demo-secrets.json."""
    from tortoise.transactions import in_transaction

    from admin import flows
    from admin import service as admin_service
    from core.audit import Actor

    passwords: dict[str, str] = dict(demo.get("operators") or {})
    for name, role, display in DEMO_OPERATORS:
        if await admin_service.operator_by_name(name=name) is not None:
            continue
        passwords[name] = secrets.token_urlsafe(12)
        op = await flows.do_create_operator(
            actor=Actor.system("demo"),
            source="demo",
            name=name,
            role=role,
            display_name=display,
            password=passwords[name],
        )
        if role == "advisor":
            async with in_transaction() as conn:
                await admin_service.update_operator(
                    conn=conn, operator_id=op.id, wecom_userid=DEMO_ADVISOR_USERID
                )
    if passwords != demo.get("operators"):
        demo["operators"] = passwords
        _write_secrets(data_dir / "demo-secrets.json", demo)
    return "\n".join(
        f"    {display:<6}  {name:<11} {passwords.get(name, '(set before; see demo-secrets.json)')}"
        for name, _role, display in DEMO_OPERATORS
    )


async def _seed_campaign(app: Any) -> None:
    """One running example campaign (a maturity reminder), so SOP 运营 is not empty."""
    from admin import service as admin_service
    from bot.keys import ANALYZER
    from core.audit import Actor
    from sop import campaigns

    author = await admin_service.operator_by_name(name="marketing")
    approver = await admin_service.operator_by_name(name="compliance")
    if author is None or approver is None:
        return
    await campaigns.seed_demo_campaign(
        author=Actor("operator", str(author.id), author.name),
        approver=Actor("operator", str(approver.id), approver.name),
        analyzer=app[ANALYZER],
    )


# When the demo customers' products mature, in days from today, in turn: a week away
# (理财到期提醒 enrols them today, so their advisors get a digest now) or later weeks
# (enrolled on the day they are a week away, if the demo still runs).
MATURITY_IN_DAYS = (7, 7, 7, 10, 14, 21, 28)


def demo_holdings(external_userids: Sequence[str], today: date) -> list[dict[str, Any]]:
    """Rows of an institution's holdings feed for the sandbox's seeded customers."""
    rows = []
    for i, ext in enumerate(sorted(external_userids)):
        matures = (today + timedelta(days=MATURITY_IN_DAYS[i % len(MATURITY_IN_DAYS)])).isoformat()
        holding = {
            "product_code": "WM-365",
            "risk_level": "R2",
            "maturity_date": matures,
            "amount": str(50_000 * (1 + i % 8)),
        }
        # One in ten is C1: the R2 product is unsuitable for them and their touches are
        # skipped with that reason instead of sent.
        risk = "C1" if i % 10 == 4 else ("C2", "C3", "C4")[i % 3]
        rows.append(
            {
                "external_userid": ext,
                "attributes": {"risk_level": risk, "maturity_date": matures, "holdings": [holding]},
            }
        )
    return rows


async def _import_holdings(app: Any, customers: Sequence[str], stop: asyncio.Event) -> None:
    """Import the seeded customers' holdings as soon as siyu knows them (tagging's
    attribute import: amounts sealed, maturity dates in the clear), then run today's date
    triggers — their daily run happened at start-up, before the feed — so the maturity
    journey enrols whoever matures a week from today."""
    from core.appkit import KEYRING
    from core.audit import Actor
    from sop.engine import enrol
    from sop.engine.timing import SHANGHAI
    from tagging import attributes
    from tagging import service as tagging_service

    pending = list(customers)
    while not stop.is_set():
        known = await tagging_service.customer_ids_by(key="external_userid", values=pending)
        if known:
            today = datetime.now(UTC).astimezone(SHANGHAI).date()
            await attributes.do_import_attributes(
                rows=[r for r in demo_holdings(customers, today) if r["external_userid"] in known],
                actor=Actor.system("demo"),
                keyring=app[KEYRING],
                source="demo",
                filename="demo-holdings.json",
            )
            await enrol.run_date_triggers()
            pending = [ext for ext in pending if ext not in known]
        if not pending:
            return
        try:
            await asyncio.wait_for(stop.wait(), timeout=3.0)
        except TimeoutError:
            pass


def _write_secrets(path: Path, values: dict[str, Any]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(values, fh)


async def run_demo(
    *,
    data_dir: Path,
    port: int = 8080,
    rate: float = 2.0,
    duration_s: float = 0.0,
    stop: asyncio.Event | None = None,
) -> None:
    from siyu.app import create_app

    data_dir = await asyncio.to_thread(data_dir.resolve)
    demo = _demo_secrets(data_dir)
    state = SandboxState(
        corp_id=demo["corp_id"],
        secrets={"app": demo["app_secret"], "contact": demo["contact_secret"]},
    )
    state.seed_demo(random.Random(42))
    seeded_customers = sorted(state.contacts)
    # Its seq continues across restarts, like WeCom's: the archive cursor persists too.
    archive = SandboxArchive(seq_path=data_dir / "sandbox" / "archive_seq")
    key_path = archive.write_private_key(data_dir / "sandbox" / "archive_v1.pem")

    fake_app = build_fake_wecom_app(state)
    add_archive_routes(fake_app, archive)
    fake_runner, fake_port = await start_site(fake_app, "127.0.0.1", 0)
    fake_url = f"http://127.0.0.1:{fake_port}"

    values: dict[str, Any] = {
        "data_dir": data_dir,
        "http": {"host": "127.0.0.1", "port": port},
        "wecom": {
            "corp_id": demo["corp_id"],
            "token": demo["token"],
            "encoding_aes_key": demo["encoding_aes_key"],
            "api_base_url": fake_url,
            "agent_id": state.agent_id,
            "app_secret": demo["app_secret"],
            "contact_secret": demo["contact_secret"],
        },
        "archive": {"sdk": "sandbox", "private_keys": {"1": str(key_path)}, "poll_interval_s": 30},
        "api": {"token": demo["api_token"]},
        # Plain HTTP on loopback, and no second factor to set up before a first look.
        "admin": {"cookie_secure": False, "totp_required_roles": []},
        # The chat sidebar signs in through the sandbox's stand-in for WeCom's OAuth page.
        "sidebar": {"oauth_base_url": fake_url},
        # Digests link each touch into the sidebar of this console.
        "sop": {"public_base_url": f"http://127.0.0.1:{port}" if port else ""},
    }
    # Through __init__, so SIYU_* environment variables still apply on top.
    settings = Settings(**values)
    app = create_app(settings, auto_migrate=True)
    runner, bound = await start_site(app, settings.http.host, settings.http.port)
    base = f"http://127.0.0.1:{bound}"
    operators = await _seed_operators(data_dir, demo)
    await _seed_campaign(app)
    print(
        f"""
siyu demo is running (data under {data_dir})

  WeCom callback URL   {base}/wecom/callback   (sandbox corp {demo["corp_id"]})
  Metrics              {base}/metrics
  Health               {base}/healthz  {base}/readyz
  Fake WeCom API       {fake_url}/sandbox/app_messages   (app messages siyu sent advisors)
  Console              {base}/login
  Chat sidebar         {base}/sidebar/   (WeCom's chat toolbar page; pick a sandbox member)
{operators}
  API token            (in {data_dir / "demo-secrets.json"}, key "api_token")
  Stored messages      SIYU_DATA_DIR={data_dir} siyu messages export

Simulated advisors and customers start now ({rate}/s). Ctrl-C stops.
""",
        flush=True,
    )
    crypto = CallbackCrypto(
        token=demo["token"], encoding_aes_key=demo["encoding_aes_key"], receive_id=demo["corp_id"]
    )
    sim = Simulator(
        state=state,
        archive=archive,
        crypto=crypto,
        callback_url=f"{base}/wecom/callback",
        rng=random.Random(),
    )
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass
    if duration_s:
        loop.call_later(duration_s, stop.set)
    status = asyncio.create_task(_print_status(stop, state))
    holdings = asyncio.create_task(_import_holdings(app, seeded_customers, stop))
    try:
        await sim.run(stop, rate=rate)
    finally:
        await status
        await holdings
        await runner.cleanup()
        await fake_runner.cleanup()
        print(f"demo stopped; simulated: {sim.sent}", flush=True)

"""The chat sidebar under test: a console wired to the WeCom sandbox, and a customer
an advisor is chatting with (messages analysed by the real model, tags with reasons,
alerts, an imported risk level)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from pydantic import SecretStr
from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot.flows import mask_free_text
from bot.sandbox import SandboxState, start_fake_wecom
from bot.sandbox.fake_api import ExternalContact, FollowInfo
from core.appkit import KEYRING
from core.settings import Settings
from tagging import service as tagging_service
from tagging.models import TagSource
from tests.admin import review_seed
from tests.admin.console import Console, start_console

ADVISOR = "zhangwei"
CUSTOMER = "wmSidebarCustomer0001"
OTHER_CUSTOMER = "wmSomeoneElses0000002"


@dataclass
class SidebarWorld:
    console: Console
    sandbox: SandboxState
    sandbox_url: str
    customer: bot_models.Customer

    def client(self) -> aiohttp.ClientSession:
        return self.console.client()

    async def sign_in(self, client: aiohttp.ClientSession, *, as_member: str = ADVISOR) -> str:
        """WeCom OAuth through the sandbox, as the WeCom client would do it; the page's
        CSRF token."""
        self.sandbox.oauth_member = as_member
        async with client.get(self.console.url("/sidebar/"), allow_redirects=True) as resp:
            html = await resp.text()
            assert resp.status == 200, (resp.status, html[:300])
            assert str(resp.url).endswith("/sidebar/")
        return csrf_of(html)


def csrf_of(html: str) -> str:
    marker = 'data-csrf="'
    at = html.index(marker) + len(marker)
    return html[at : html.index('"', at)]


def sidebar_settings(settings: Settings, sandbox: SandboxState, sandbox_url: str) -> Settings:
    settings.wecom.corp_id = sandbox.corp_id
    settings.wecom.agent_id = sandbox.agent_id
    settings.wecom.api_base_url = sandbox_url
    settings.wecom.app_secret = SecretStr(sandbox.secrets["app"])
    settings.sidebar.oauth_base_url = sandbox_url
    return settings


async def seed_customer(console: Console) -> bot_models.Customer:
    """张伟 follows 周大福: a chat with a question about redemption, tags, alerts."""
    keyring = console.app[KEYRING]
    advisor = await review_seed.advisor(ADVISOR, "张伟", department="财富管理部")
    other_advisor = await review_seed.advisor("wangfang", "王芳")
    customer = await review_seed.customer(CUSTOMER, "周大福")
    customer.attributes = {"risk_level": "C3", "aum_band": "50万-300万"}
    await customer.save()
    await bot_models.FollowRelation.create(
        customer=customer,
        advisor=advisor,
        # Stored as the edge stores it: the number masked (its original would be sealed).
        remark=mask_free_text("周总 手机13912345678"),
        status="active",
        added_at=datetime.now(UTC) - timedelta(days=90),
    )
    stranger = await review_seed.customer(OTHER_CUSTOMER, "秘密客户")
    await bot_models.FollowRelation.create(
        customer=stranger, advisor=other_advisor, status="active"
    )
    now = datetime.now(UTC)
    seeded = await review_seed.conversation(
        keyring=keyring,
        advisor_row=advisor,
        customer_row=customer,
        turns=[
            ("customer", "我那笔理财下周到期，想赎回转到别家，手续怎么办？"),
            ("advisor", "周总您好，到期后资金自动回到您的账户，我帮您看看续作的产品。"),
            ("customer", "你们上次推荐的基金亏了不少，我很不满意。"),
        ],
        start=now - timedelta(hours=2),
        msgid_prefix="sb",
    )
    # The intent the pipeline would have stored for the customer's lines.
    for m in seeded.messages:
        if m.sender_role == "customer" and isinstance(m.analysis, dict):
            m.intent = m.analysis.get("intent")
            await m.save(update_fields=["intent"])
    for kind in ("redemption_intent", "complaint"):
        await bot_models.Alert.create(
            idem_key=f"{kind}:sb-{kind}",
            kind=kind,
            recipient_userid=ADVISOR,
            advisor_userid=ADVISOR,
            external_userid=CUSTOMER,
            msgid="sb-0",
            detail={},
        )
    async with in_transaction() as conn:
        group = await tagging_service.create_group(conn=conn, name="客户等级")
        tag = await tagging_service.create_tag(conn=conn, group=group, name="金卡客户")
        await tagging_service.apply_customer_tag(
            conn=conn,
            customer_id=customer.id,
            tag_id=tag.id,
            source=TagSource.MANUAL,
            applied_by="operator:1",
            reason={"note": "年初资产达标"},
        )
    return customer


def sandbox_state() -> SandboxState:
    state = SandboxState()
    state.seed_demo(random.Random(11))
    state.add_contact(
        ExternalContact(CUSTOMER, "周大福"),
        {ADVISOR: FollowInfo(createtime=1_700_000_000, remark="周总")},
    )
    return state


async def start_world(settings: Settings, analyzer: Any) -> AsyncIterator[SidebarWorld]:
    state = sandbox_state()
    runner, sandbox_url = await start_fake_wecom(state)
    settings = sidebar_settings(settings, state, sandbox_url)
    console, closers = await start_console(settings, analyzer=analyzer)
    try:
        customer = await seed_customer(console)
        yield SidebarWorld(console, state, sandbox_url, customer)
    finally:
        for close in closers:
            await close()
        await runner.cleanup()


def origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"

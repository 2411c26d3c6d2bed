"""The chat sidebar in headless Chromium at 375×667, with a stand-in for the WeCom client.

The page runs the real vendored @wecom/jssdk (``ww``).  What WeCom's client provides to a
page — the ``WeixinJSBridge`` that ``ww`` calls, and a ``wxwork/`` user agent — is
injected before any script runs (Playwright's init script).  That stand-in behaves as
the client does: it verifies the ``agentConfig`` signature against the app's jsapi
tickets (asking the sandbox, through a binding, what WeCom's server would know) and
refuses every later call if it does not verify; it answers ``getContext`` /
``getCurExternalContact`` with the conversation it was opened on; it records what
``sendChatMessage`` was asked to send.

Walk: WeCom sign-in through the sandbox's OAuth; the current customer; a violating
sentence highlighted with its rule, basis and suggestion, the send button refused, an
override with a reason (a review case opened); a clean sentence sent; an approved
snippet sent and counted; a mini-program card sent with its cover's URL.  And the
lexicon's half: a line refused in the sidebar, an exception compliance adds, dry-runs
and publishes in the console, the sidebar's next check passing it.
Screenshots: var/screenshots/sidebar-*.png.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from admin.snippets import flows as snippets
from admin.snippets import service as snippet_service
from bot import models as bot_models
from bot.keys import ANALYZER
from core import audit
from core.audit import Actor
from core.settings import Settings
from tests.admin.console import make_operator
from tests.admin.sidebar_support import ADVISOR, CUSTOMER, SidebarWorld, start_world
from tests.admin.test_browser import browser, no_horizontal_overflow, shot, sign_in
from tests.admin.test_lexicon import pool
from tests.admin.test_lexicon_browser import PRODUCT_LINE, add_exception
from tests.admin.test_snippets import png

__all__ = ["browser", "pool"]

WECOM_UA = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 16_6 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Mobile/15E148 wxwork/4.1.22 MicroMessenger/7.0.1 Language/zh"
)
VIOLATING = "这款理财保本保息，年化收益至少4.5%，闭着眼睛买都不会亏。"
CLEAN = "周总您好，本产品不保证本金和收益，过往业绩不代表未来表现，请您阅读产品说明书后再决定。"

# The WeCom client's side of the JS-SDK, as a page sees it.
WECOM_CLIENT_STUB = """
(() => {
  const client = {
    opened: { entry: "single_chat_tools", userId: __CUSTOMER__, chatId: null },
    calls: [], agentConfig: null, verified: null, sent: []
  };
  window.__wecomClient = client;
  window.WeixinJSBridge = {
    on() {},
    invoke(name, params, callback) {
      client.calls.push({ name, params: JSON.parse(JSON.stringify(params)) });
      const answer = (body) => setTimeout(() => callback(body), 0);
      if (name === "agentConfig") {
        client.agentConfig = params;
        window.verifyAgentConfig(params, location.href.split("#")[0]).then((ok) => {
          client.verified = ok;
          answer({ err_msg: ok ? "agentConfig:ok" : "agentConfig:fail invalid signature" });
        });
        return;
      }
      if (!client.verified) { answer({ err_msg: name + ":fail no permission" }); return; }
      if (name === "getContext") answer({ err_msg: "getContext:ok", entry: client.opened.entry });
      else if (name === "getCurExternalContact")
        answer({ err_msg: "getCurExternalContact:ok", userId: client.opened.userId });
      else if (name === "getCurExternalChat")
        answer({ err_msg: "getCurExternalChat:ok", chatId: client.opened.chatId });
      else if (name === "sendChatMessage") {
        client.sent.push(params);
        answer({ err_msg: "sendChatMessage:ok" });
      }
      else answer({ err_msg: name + ":fail not supported" });
    }
  };
})();
""".replace("__CUSTOMER__", json.dumps(CUSTOMER))


@pytest.fixture
async def world(
    console_settings: Settings, analyzer: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    async for w in start_world(console_settings, analyzer):
        yield w


def _verifier(world: SidebarWorld, seen: list[dict[str, Any]]) -> Any:
    """What WeCom's client checks: the signature over the page URL with a live ticket."""

    def verify(params: dict[str, Any], url: str) -> bool:
        ok = params.get("corpid") == world.sandbox.corp_id and params.get("agentid") == str(
            world.sandbox.agent_id
        )
        plain = "jsapi_ticket={}&noncestr={}&timestamp={}&url={}"
        ok = ok and any(
            hashlib.sha1(  # WeCom's signature is SHA-1
                plain.format(t.ticket, params["nonceStr"], params["timestamp"], url).encode()
            ).hexdigest()
            == params.get("signature")
            for t in world.sandbox.valid_jsapi_tickets()
        )
        seen.append({"params": params, "url": url, "ok": ok})
        return ok

    return verify


async def wecom_phone(
    world: SidebarWorld, browser: Any, verified: list[dict[str, Any]], refused: list[str]
) -> tuple[Any, Any]:
    """A 375×667 phone whose browser is WeCom's: the client's bridge and user agent."""
    ctx = await browser.new_context(
        viewport={"width": 375, "height": 667},
        locale="zh-CN",
        user_agent=WECOM_UA,
        is_mobile=True,
        has_touch=True,
    )
    await ctx.expose_function("verifyAgentConfig", _verifier(world, verified))
    await ctx.add_init_script(WECOM_CLIENT_STUB)
    page = await ctx.new_page()
    page.on("console", lambda m: refused.append(m.text) if "Content Security" in m.text else None)
    return ctx, page


async def _sent(page: Any) -> list[dict[str, Any]]:
    return list(await page.evaluate("window.__wecomClient.sent"))


async def test_the_sidebar_inside_wecom(world: SidebarWorld, browser: Any) -> None:
    # An approved snippet in the reply library (marketing wrote it, compliance approved it).
    row = await snippets.do_create(
        actor=Actor("operator", "2", "wang-ops"),
        source="test",
        data=snippets.SnippetInput(
            kind="text",
            title="到期续作提醒",
            topic="产品到期",
            text="周总您好，您的理财将于下周到期，到期资金将自动回到您的账户。如需了解其他产品，请以产品说明书和风险揭示书为准。",
        ),
    )
    await snippets.do_approve(
        actor=Actor("operator", "3", "li-compliance"),
        source="test",
        snippet_id=row.id,
        revision=row.revision,
        analyzer=world.console.app[ANALYZER],
    )
    # A mini-program card: WeCom's JS-SDK takes its cover as a URL (imgUrl).
    card = await snippets.do_create(
        actor=Actor("operator", "2", "wang-ops"),
        source="test",
        data=snippets.SnippetInput(
            kind="miniprogram",
            title="线上预约开户",
            topic="服务信息",
            mp_appid="wx1234567890abcdef",
            mp_title="线上预约开户，三分钟办好",
            mp_page="pages/open/index.html",
            image=png(5, 4),
            image_name="cover.png",
        ),
    )
    await snippets.do_approve(
        actor=Actor("operator", "3", "li-compliance"),
        source="test",
        snippet_id=card.id,
        revision=card.revision,
        analyzer=world.console.app[ANALYZER],
    )

    verified: list[dict[str, Any]] = []
    refused: list[str] = []
    ctx, page = await wecom_phone(world, browser, verified, refused)

    # Opened from the chat toolbar: WeCom signs the member in (OAuth) and back to the page.
    world.sandbox.oauth_member = ADVISOR
    await page.goto(world.console.url("/sidebar/"))
    await page.wait_for_selector("#sb-who-card >> text=周大福")
    # Back on the sidebar (the authorize URL's #wechat_redirect rides along, as browsers
    # keep a fragment across redirects; the signature is over the URL without it).
    assert page.url.split("#")[0] == world.console.url("/sidebar/")

    # The client verified agentConfig with the app's ticket, for this very page.
    assert [v["ok"] for v in verified] == [True]
    assert verified[0]["url"] == world.console.url("/sidebar/")
    assert verified[0]["params"]["jsApiList"]  # the APIs it asked for
    names = [c["name"] for c in await page.evaluate("window.__wecomClient.calls")]
    assert names[:3] == ["agentConfig", "getContext", "getCurExternalContact"]
    header = await page.inner_text("#sb-who")
    assert "风险 C3" in header and "赎回意向" in header and "投诉" in header
    assert "13912345678" not in header
    await shot(page, "sidebar-open")

    # A violating sentence: spans, the rule and its basis, the suggestion; no sending.
    await page.fill("#sb-text", VIOLATING)
    await page.wait_for_selector(".sb-finding.is-violation")
    marks = await page.locator("#sb-preview mark.hl-violation").all_inner_texts()
    assert "保本保息" in marks and "不会亏" in marks
    findings = await page.inner_text("#sb-findings")
    assert "承诺保本保收益" in findings and "资管新规" in findings and "GR-001" in findings
    assert "本产品不保证本金和收益，过往业绩不代表未来表现" in findings  # the rewording
    assert await page.is_disabled("#sb-send")
    assert await page.is_visible("#sb-override-open")
    await no_horizontal_overflow(page)
    await shot(page, "sidebar-violation")

    # Taking a suggestion rewrites the span and checks again.
    await page.locator(".sb-finding", has_text="不会亏").locator("text=采用建议").click()
    await page.wait_for_function(
        "document.getElementById('sb-text').value.includes('产品有风险，收益不确定')"
    )
    # The check of the reworded text has answered once the preview shows it (polled from
    # here: the page's CSP refuses the eval a string wait_for_function needs).
    await page.locator("#sb-preview", has_text="产品有风险，收益不确定").wait_for()
    await page.wait_for_selector(".sb-finding >> text=保本保息")
    assert "不会亏" not in await page.inner_text("#sb-preview")

    # Overriding: refused without a reason, then recorded with one and sent.
    await page.fill("#sb-text", VIOLATING)
    await page.wait_for_selector("#sb-preview mark.hl-violation >> text=不会亏")
    await page.click("#sb-override-open")
    await page.fill("#sb-reason", "好")
    await page.click("#sb-override-send")
    await page.wait_for_selector("#sb-reason-error:not([hidden])")
    assert await _sent(page) == []
    await page.fill("#sb-reason", "客户要求逐字转述合同条款，已当面提示风险")
    await shot(page, "sidebar-override")
    await page.click("#sb-override-send")
    await page.wait_for_selector("#sb-toast >> text=案件")
    sent = await _sent(page)
    assert len(sent) == 1
    assert sent[0]["msgtype"] == "text" and sent[0]["text"] == {"content": VIOLATING}
    case = await bot_models.ReviewCase.filter(advisor_userid=ADVISOR).order_by("-id").first()
    assert case is not None and f"案件 #{case.id}" in await page.inner_text("#sb-toast")
    entries = await audit.entries(
        where=audit.AuditFilter(action="sidebar.override", target=f"review_case:{case.id}")
    )
    assert entries[0].detail_dict["reason"] == "客户要求逐字转述合同条款，已当面提示风险"
    await shot(page, "sidebar-overridden")

    # A clean sentence goes straight into the chat.
    await page.fill("#sb-text", CLEAN)
    await page.wait_for_selector("#sb-status >> text=未发现合规问题")
    assert await page.is_enabled("#sb-send")
    await shot(page, "sidebar-clean")
    await page.click("#sb-send")
    await page.wait_for_selector("#sb-toast >> text=已发送")
    # The override's toast may still be up: the send is done once the box is emptied.
    for _ in range(100):
        if await page.input_value("#sb-text") == "":
            break
        await page.wait_for_timeout(50)
    sent = await _sent(page)
    assert sent[-1]["msgtype"] == "text" and sent[-1]["text"] == {"content": CLEAN}
    assert await page.input_value("#sb-text") == ""

    # The customer's profile: tags with why, intents and sentiment, alerts.
    await page.click("#tab-customer")
    detail = await page.inner_text("#sb-customer")
    assert "金卡客户" in detail and "年初资产达标" in detail
    assert "风险承受能力" in detail and "C3" in detail
    intents = await page.inner_text("#sb-intents")
    assert "赎回意向" in intents and "投诉" in intents and "负面" in intents
    await no_horizontal_overflow(page)
    await shot(page, "sidebar-customer")

    # The reply library: an approved snippet, sent with a tap and counted.
    await page.click("#tab-snippets")
    item = page.locator(".sb-snippet", has_text="到期续作提醒")
    await item.wait_for()
    await no_horizontal_overflow(page)
    await shot(page, "sidebar-snippets")
    await item.locator("text=发送").click()
    await page.wait_for_selector("#sb-toast >> text=已发送话术")
    sent = await _sent(page)
    assert sent[-1]["msgtype"] == "text"
    assert sent[-1]["text"]["content"].startswith("周总您好，您的理财将于下周到期")
    for _ in range(100):
        counted = await snippet_service.snippet(snippet_id=row.id)
        if counted is not None and counted.use_count == 1:
            break
        await page.wait_for_timeout(50)
    assert counted is not None and counted.use_count == 1

    # The mini-program card: appid, title, page and the cover's URL, which the WeCom
    # client fetches itself (no sidebar cookie) — served by siyu while it is approved.
    await page.locator(".sb-snippet", has_text="线上预约开户").locator("text=发送").click()
    await page.wait_for_selector("#sb-toast >> text=已发送话术「线上预约开户」")
    sent = await _sent(page)
    assert sent[-1]["msgtype"] == "miniprogram"
    mini = sent[-1]["miniprogram"]
    assert (mini["appid"], mini["title"], mini["page"]) == (
        "wx1234567890abcdef",
        "线上预约开户，三分钟办好",
        "pages/open/index.html",
    )
    assert mini["imgUrl"].startswith(world.console.url("/snippets/covers/"))
    async with aiohttp.ClientSession() as wecom, wecom.get(mini["imgUrl"]) as resp:
        assert resp.status == 200 and resp.content_type == "image/png"
        assert await resp.read() == png(5, 4)

    assert refused == []
    await ctx.close()


async def test_outside_wecom_the_page_still_checks_but_cannot_send(
    world: SidebarWorld, browser: Any
) -> None:
    """Opened in a plain browser (no WeCom client): checking works, sending is off."""
    ctx = await browser.new_context(viewport={"width": 375, "height": 667}, locale="zh-CN")
    page = await ctx.new_page()
    world.sandbox.oauth_member = ADVISOR
    await page.goto(world.console.url("/sidebar/"))
    await page.wait_for_selector("#sb-who >> text=仅可使用发送前检查", timeout=20_000)
    await page.fill("#sb-text", VIOLATING)
    await page.wait_for_selector(".sb-finding.is-violation")
    assert await page.is_disabled("#sb-send")
    await page.fill("#sb-text", CLEAN)
    await page.wait_for_selector("#sb-status >> text=未发现合规问题")
    assert await page.is_disabled("#sb-send")
    await shot(page, "sidebar-outside-wecom")
    await ctx.close()


# ------------------------------------------------------------------ with the lexicon


@pytest.fixture
async def lex_world(
    console_settings: Settings, pool: object, redis_client: object, db: None
) -> AsyncIterator[SidebarWorld]:
    """The sidebar's console on the analyzer pool, which runs the institution's overlay."""
    async for w in start_world(console_settings, pool):
        yield w


async def test_an_exception_compliance_publishes_is_honoured_by_the_sidebar(
    lex_world: SidebarWorld, browser: Any
) -> None:
    """Issue 11's two halves in one walk: the advisor's line is refused in the sidebar;
    a compliance reviewer adds an exception in the console, sees its dry run, publishes;
    the advisor's next check passes and the line is sent."""
    world = lex_world
    verified: list[dict[str, Any]] = []
    refused: list[str] = []
    phone, page = await wecom_phone(world, browser, verified, refused)
    world.sandbox.oauth_member = ADVISOR
    await page.goto(world.console.url("/sidebar/"))
    await page.wait_for_selector("#sb-who-card >> text=周大福")
    assert [v["ok"] for v in verified] == [True]

    # The bank's product name reads as a promise to the shipped rules: refused.
    await page.fill("#sb-text", PRODUCT_LINE)
    await page.wait_for_selector(".sb-finding.is-violation")
    assert "稳赢" in await page.locator("#sb-preview mark.hl-violation").first.inner_text()
    assert "GR-002" in await page.inner_text("#sb-findings")
    assert await page.is_disabled("#sb-send")
    await shot(page, "sidebar-lexicon-before")

    # Compliance, in the console: the product's name as an exception, dry run, publish.
    await make_operator("compliance", name="reviewer", display_name="李合规")
    desk = await browser.new_context(viewport={"width": 1280, "height": 800}, locale="zh-CN")
    console_page = await desk.new_page()
    console_page.on(
        "console", lambda m: refused.append(m.text) if "Content Security" in m.text else None
    )
    await sign_in(console_page, world.console, "reviewer")
    await console_page.wait_for_url(world.console.url("/"))
    await console_page.goto(world.console.url("/lexicon"))
    await add_exception(console_page, "稳赢增利", "本行理财产品“稳赢增利”系列的名称，不是收益承诺")
    await console_page.click("#dry-run")
    await console_page.wait_for_selector("#dry-run-stats")
    # The effect on the labelled sets before it applies: no labelled line changes.
    assert await console_page.inner_text("#findings-removed") == "0"
    assert await console_page.inner_text("#findings-added") == "0"
    await shot(console_page, "sidebar-lexicon-dry-run")
    # Still a draft: the advisor's check has not changed.
    await page.fill("#sb-text", "")
    await page.fill("#sb-text", PRODUCT_LINE)
    await page.wait_for_selector(".sb-finding.is-violation")
    await console_page.fill("#reason", "本行产品名“稳赢增利”不是收益承诺，经法规部确认")
    await console_page.click("#publish")
    await console_page.wait_for_url("**/lexicon/versions/1?published=1*")
    assert "已发布 v1" in await console_page.inner_text("#published-notice")
    await desk.close()

    # The advisor's next check honours it, and the line goes into the chat.
    await page.fill("#sb-text", "")
    await page.fill("#sb-text", PRODUCT_LINE)
    await page.wait_for_selector("#sb-status >> text=未发现合规问题")
    assert await page.locator(".sb-finding").count() == 0
    assert await page.is_enabled("#sb-send")
    await shot(page, "sidebar-lexicon-after")
    await page.click("#sb-send")
    await page.wait_for_selector("#sb-toast >> text=已发送")
    sent = await _sent(page)
    assert [(m["msgtype"], m["text"]) for m in sent] == [("text", {"content": PRODUCT_LINE})]
    # The same term outside the name is still a promise.
    await page.fill("#sb-text", "这款稳赢，放心买")
    await page.wait_for_selector(".sb-finding.is-violation")
    assert await page.is_disabled("#sb-send")

    assert refused == []
    await phone.close()

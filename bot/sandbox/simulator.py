"""Traffic simulator: advisors and customers of the sandbox corp at work.

It plays WeCom: contacts are added and edited (encrypted, signed callbacks, as
WeCom sends them), and chats happen in Chinese — product questions,
complaints, redemption talk, and now and then an advisor line that breaks
sales rules — delivered as WeCom delivers chats: into the archive, followed by
a ``msgaudit_notify`` callback so siyu's puller fetches them.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from dataclasses import dataclass, field
from xml.sax.saxutils import escape

import aiohttp

from bot.sandbox.archive import SandboxArchive
from bot.sandbox.fake_api import ExternalContact, FollowInfo, SandboxState
from bot.sandbox.fake_api.seed import CUSTOMER_GIVEN_NAMES, CUSTOMER_SURNAMES
from bot.wecom.crypto import CallbackCrypto

log = logging.getLogger(__name__)

CHANNELS = ["branch_qr_01", "wealth_salon", "app_banner", "mgm_referral", "phone_visit"]

CUSTOMER_LINES = {
    "product_inquiry": [
        "你们那款稳健理财现在七日年化多少？",
        "这个基金的风险等级是几级啊？",
        "有没有一年期左右的产品推荐一下",
        "养老金产品和普通理财有什么区别？",
        "大额存单现在还有额度吗",
    ],
    "purchase_intent": [
        "那我先买五万试试，怎么操作？",
        "这款我想认购，今天能下单吗",
        "帮我预约一下明天的那个新发基金",
    ],
    "redemption_intent": [
        "我想把那个理财赎回了，最近要用钱",
        "这个保单我想退保，手续怎么办？",
        "基金亏太多了，我打算全部转出",
        "下个月到期的那笔不续了，直接取出来",
    ],
    "complaint": [
        "你们这产品亏了这么多，当初可没说有这个风险！",
        "打了三次客服电话都没人处理，太让人失望了",
        "我要投诉，收费跟当时说的不一样",
    ],
    "account_service": [
        "手机银行登录不上去了怎么办",
        "我的预留手机号换了，要怎么改？我新号是13912345678",
    ],
    "chitchat": ["好的谢谢", "收到，辛苦了", "最近挺忙的，回头再聊"],
}

ADVISOR_CLEAN = [
    "您好，这款产品风险等级R2，过往业绩不代表未来表现，请您结合自身情况考虑。",
    "理财非存款，产品有风险，投资须谨慎。详细说明书我发您看一下。",
    "赎回可以在手机银行操作，T+1到账，有问题随时找我。",
    "非常抱歉给您带来不好的体验，我马上反馈并跟进处理进度。",
    "本产品不保证本金和收益，建议先做一下风险测评。",
    "您可以拨打我们的客服热线95588咨询，也可以来网点办理。",
]

ADVISOR_VIOLATIONS = [
    "这个产品保本保收益，年化肯定不低于5%，放心买",
    "跟存款一样安全，绝对不会亏的",
    "您把钱转到我个人卡上，我帮您操作，收益更高",
    "把手机银行密码和验证码发我，我替您下单",
    "风险测评您就都选C，我帮您填好了",
    "买了我返您0.5%的现金，别跟别人说",
    "内部消息，这只股票下周肯定涨停",
]


def _xml(fields: dict[str, str | int]) -> str:
    parts = []
    for k, v in fields.items():
        if isinstance(v, int):
            parts.append(f"<{k}>{v}</{k}>")
        else:
            parts.append(f"<{k}><![CDATA[{escape(v)}]]></{k}>")
    return "<xml>" + "".join(parts) + "</xml>"


@dataclass
class Simulator:
    state: SandboxState
    archive: SandboxArchive
    crypto: CallbackCrypto
    callback_url: str
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    violation_rate: float = 0.15
    sent: dict[str, int] = field(default_factory=dict)

    async def post_callback(self, session: aiohttp.ClientSession, plaintext: str) -> int:
        nonce = secrets.token_hex(8)
        ts = str(int(time.time()))
        body, sig = self.crypto.build_callback_body(
            plaintext,
            nonce=nonce,
            timestamp=ts,
            to_user_name=self.state.corp_id,
            agent_id=str(self.state.agent_id),
        )
        params = {"msg_signature": sig, "timestamp": ts, "nonce": nonce}
        # WeCom retries three more times when it gets no "success".
        for attempt in range(4):
            try:
                async with session.post(self.callback_url, params=params, data=body) as resp:
                    await resp.read()
                    if resp.status == 200:
                        return resp.status
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.5 * (attempt + 1))
        return 0

    def _event(self, event: str, change_type: str, **extra: str | int) -> str:
        return _xml(
            {
                "ToUserName": self.state.corp_id,
                "FromUserName": "sys",
                "CreateTime": int(time.time()),
                "MsgType": "event",
                "Event": event,
                "ChangeType": change_type,
                **extra,
            }
        )

    def _advisors(self) -> list[str]:
        return [u for u, m in self.state.members.items() if m.manager]

    async def add_contact(self, session: aiohttp.ClientSession) -> str:
        advisor = self.rng.choice(self._advisors())
        ext = self.state.new_id("wm", 30)
        # The same pool as the seeded corp: one source of demo names.
        name = self.rng.choice(CUSTOMER_SURNAMES) + self.rng.choice(CUSTOMER_GIVEN_NAMES)
        channel = self.rng.choice(CHANNELS)
        self.state.add_contact(
            ExternalContact(
                ext,
                name,
                type=1,
                gender=self.rng.choice([1, 2]),
                unionid=self.state.new_id("o", 27),
            ),
            {
                advisor: FollowInfo(
                    createtime=int(time.time()), state=channel, remark=f"{name}-{channel}"
                )
            },
        )
        code = self.state.issue_welcome_code(userid=advisor, external_userid=ext)
        await self.post_callback(
            session,
            self._event(
                "change_external_contact",
                "add_external_contact",
                UserID=advisor,
                ExternalUserID=ext,
                State=channel,
                WelcomeCode=code,
            ),
        )
        self._count("add_contact")
        return ext

    def _relations(self) -> list[tuple[str, str]]:
        return [(u, e) for u, fs in self.state.follows.items() for e in fs]

    async def edit_contact(self, session: aiohttp.ClientSession) -> None:
        rels = self._relations()
        if not rels:
            return
        advisor, ext = self.rng.choice(rels)
        info = self.state.follows[advisor][ext]
        tags = [t.id for g in self.state.tag_groups.values() for t in g.tags]
        if tags:
            info.tags = sorted(set(info.tags) | {self.rng.choice(tags)})
        await self.post_callback(
            session,
            self._event(
                "change_external_contact",
                "edit_external_contact",
                UserID=advisor,
                ExternalUserID=ext,
            ),
        )
        self._count("edit_contact")

    async def churn(self, session: aiohttp.ClientSession) -> None:
        rels = self._relations()
        if len(rels) < 5:
            return
        advisor, ext = self.rng.choice(rels)
        del self.state.follows[advisor][ext]
        await self.post_callback(
            session,
            self._event(
                "change_external_contact",
                "del_follow_user",
                UserID=advisor,
                ExternalUserID=ext,
            ),
        )
        self._count("churn")

    async def chat(self, session: aiohttp.ClientSession, *, notify: bool = True) -> int:
        rels = self._relations()
        if not rels:
            return 0
        advisor, ext = self.rng.choice(rels)
        intent = self.rng.choice(list(CUSTOMER_LINES))
        lines = [(ext, advisor, self.rng.choice(CUSTOMER_LINES[intent]))]
        if self.rng.random() < self.violation_rate:
            reply = self.rng.choice(ADVISOR_VIOLATIONS)
        else:
            reply = self.rng.choice(ADVISOR_CLEAN)
        lines.append((advisor, ext, reply))
        now_ms = int(time.time() * 1000)
        for i, (sender, receiver, text) in enumerate(lines):
            self.archive.append(
                {
                    "msgid": f"{secrets.token_hex(10)}_external",
                    "action": "send",
                    "from": sender,
                    "tolist": [receiver],
                    "roomid": "",
                    "msgtime": now_ms + i * 1500,
                    "msgtype": "text",
                    "text": {"content": text},
                }
            )
        if notify:
            await self.post_callback(
                session,
                _xml(
                    {
                        "ToUserName": self.state.corp_id,
                        "FromUserName": "sys",
                        "CreateTime": int(time.time()),
                        "MsgType": "event",
                        "Event": "msgaudit_notify",
                        "AgentID": self.state.agent_id,
                    }
                ),
            )
        self._count("chat")
        return len(lines)

    async def app_message(self, session: aiohttp.ClientSession) -> None:
        advisor = self.rng.choice(self._advisors())
        await self.post_callback(
            session,
            _xml(
                {
                    "ToUserName": self.state.corp_id,
                    "FromUserName": advisor,
                    "CreateTime": int(time.time()),
                    "MsgType": "text",
                    "Content": self.rng.choice(
                        ["今天的SOP任务在哪里看？", "帮我查下客户王芳的持仓"]
                    ),
                    "MsgId": str(self.rng.randrange(10**18, 10**19)),
                    "AgentID": self.state.agent_id,
                }
            ),
        )
        self._count("app_message")

    def _count(self, what: str) -> None:
        self.sent[what] = self.sent.get(what, 0) + 1

    async def step(self, session: aiohttp.ClientSession) -> None:
        r = self.rng.random()
        if r < 0.2:
            await self.add_contact(session)
        elif r < 0.3:
            await self.edit_contact(session)
        elif r < 0.34:
            await self.churn(session)
        elif r < 0.38:
            await self.app_message(session)
        else:
            await self.chat(session)

    async def run(self, stop: asyncio.Event, *, rate: float = 2.0) -> None:
        async with aiohttp.ClientSession() as session:
            # A corp starts with some customers already added.
            for _ in range(3):
                await self.add_contact(session)
            while not stop.is_set():
                try:
                    await self.step(session)
                except Exception:
                    log.exception("simulator step failed")
                try:
                    await asyncio.wait_for(stop.wait(), timeout=1.0 / max(rate, 0.01))
                except TimeoutError:
                    pass

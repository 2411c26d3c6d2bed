"""Advisor lines read alone, twelfth round.

Everyday money that is no financial service must not put a line on financial ground
(``DomainAnchors.anchored``), so a finding only the model proposes is not kept there:

- a shop's balance paid on a sales day (预售的尾款记得付, 去补尾款);
- a card or deposit at a library, a gym, a pool or a barber's (健身房办卡要押金);
- tickets for a train, a film or a concert (电影票抢到了, 抢到高铁票);
- walking the customer somewhere (我送你到地铁口);
- nearly missing something oneself (我差点错过了).

Lines that share those words and speak of real products keep their ground.

Customer phrasings that decide intent whatever the model read (``KeywordIntent.decisive``):
a promise gone back on (说好…，怎么…; 说降就降), a service scorned (，什么服务), a cost
above what was said (比你们宣传的低), trips made in vain (跑了四趟): a complaint; redeeming
once a term ends (到期了我就赎回); the risk level a product needs (要什么风险等级); a
disability assessment (伤残鉴定): a claim; a credit report (征信报告): account service. A
question about buying two things together (能一起买吗) is no order.

The lines are written afresh here (none is taken from a data file).
"""

from __future__ import annotations

import pytest

from compliance_nlp.lexicon import DomainAnchors, KeywordIntent
from compliance_nlp.normalize import normalize

EVERYDAY = [
    "预售的尾款记得付，晚了就没优惠了",
    "我下班去补尾款，顺便取个快递",
    "健身房办卡还要交押金，我没办",
    "游泳馆的会员卡能借我用两次",
    "瑜伽馆的卡我办了一年，才去了三回",
    "电影票抢到了吗？首映那场",
    "我昨天抢到了回家的动车票",
    "下雨了，我送你到地铁口吧",
    "那个讲座我差点错过，幸亏您提醒",
]

# Real product lines sharing those words: they stay on financial ground.
PRODUCT = [
    "这款理财的尾款直接转我个人卡就行",
    "房东卡号发我，租金我帮您转",
    "送您一张超市购物卡，买了这款保险再送您一份",
    "这只股票抢到了就是赚到，明天还要涨",
    "错过今天再等一年",
    "最多亏多少您心里要有数",
    "送您到期多送两个点",
    "办卡押金交给我保管",
]


@pytest.fixture(scope="module")
def anchors() -> DomainAnchors:
    return DomainAnchors()


@pytest.mark.parametrize("text", EVERYDAY)
def test_everyday_money_is_no_financial_ground(anchors: DomainAnchors, text: str) -> None:
    assert not anchors.anchored(normalize(text).text)


@pytest.mark.parametrize("text", PRODUCT)
def test_product_lines_keep_their_ground(anchors: DomainAnchors, text: str) -> None:
    assert anchors.anchored(normalize(text).text)


# Customer phrasings that decide intent over the model's label (``decisive`` in
# intents.json): (line, label the model might read, intent the phrasing decides).
DECISIVE = [
    ("手续费说好全免，怎么又扣了20", "account_service", "complaint"),
    ("理财收益说降就降，谁受得了", "product_inquiry", "complaint"),
    ("排队排了一上午，什么服务！", "account_service", "complaint"),
    ("利息比你们宣传的低一半", "product_inquiry", "complaint"),
    ("改个手机号跑了四趟", "account_service", "complaint"),
    ("这只债基到期了我就赎回", "product_inquiry", "redemption_intent"),
    ("这款年金要什么风险等级", "product_inquiry", "risk_assessment"),
    ("伤残鉴定结果出来要多久", "product_inquiry", "claim_service"),
    ("征信报告能在手机上打印吗", "claim_service", "account_service"),
]

# Lines sharing those words that no cue decides: the model's label stands.
UNDECIDED = [
    ("定投和存单能一起买吗", "product_inquiry"),
    ("已经说好了，明天不见不散", "chitchat"),
    ("你们网点有什么服务项目", "product_inquiry"),
    ("这款理财到期了能自动续吗", "product_inquiry"),
]


@pytest.fixture(scope="module")
def keyword_intent() -> KeywordIntent:
    return KeywordIntent()


@pytest.mark.parametrize(("text", "read", "decided"), DECISIVE)
def test_decisive_phrasing_decides_intent(
    keyword_intent: KeywordIntent, text: str, read: str, decided: str
) -> None:
    assert keyword_intent.decisive(normalize(text).text, read) == decided


@pytest.mark.parametrize(("text", "read"), UNDECIDED)
def test_shared_words_decide_nothing(keyword_intent: KeywordIntent, text: str, read: str) -> None:
    assert keyword_intent.decisive(normalize(text).text, read) is None

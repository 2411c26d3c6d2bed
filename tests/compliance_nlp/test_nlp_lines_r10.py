"""Customer intent and advisor lines read alone, tenth round.

Customer intent: the small intent model reads a grievance that names a card, a fee or
the app as account service, and an order that names the product as a product question.
Phrasings that decide the intent whatever the model read (``rules/intents.json``,
``decisive``) put them right: a grievance (凭什么扣我, 说好的…呢, 谁负责, 硬拉我买) is a
complaint; an order in the first person (我要买, 也来一份, 再加2万进去) is a purchase;
不续了 / 卖了吧 / 能退吗 ask to leave. Each cue overrules only the labels it lists, so a
question about the level a product needs stays a risk-assessment question and a thank-you
for a scam warning stays chitchat.

Advisor lines: saying where principal protection is still to be had (保本的只有存款和国债
了) is an accurate statement, not a product passed off as a deposit.

Every line is written for this test (none is taken from a data file).
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import KeywordIntent
from compliance_nlp.normalize import normalize
from tests.compliance_nlp.findings import line_violations as _violations


@pytest.fixture(scope="module")
def keywords() -> KeywordIntent:
    return KeywordIntent()


COMPLAINTS = [
    "储蓄卡我半年没动过，凭什么扣我50块管理费",
    "说好的免手续费呢，这个月又扣了",
    "信用卡被盗刷了三千，打客服没人理，谁负责",
    "柜员硬拉我办了张信用卡，我根本没同意",
    "理财经理一直给我打电话推销基金，我都说了不要",
    "短信提醒费偷偷扣了一年，我都不知道",
    "分红比合同上演示的少了一大截",
    "网银又崩了，工资转不出去",
    "贷款批了半个月还没放款，装修队天天催",
    "房贷提前还款的违约金，别的行早就免了",
    "我电话号码是不是你们泄露出去的，天天接到推销",
]

PURCHASES = [
    "那个三年期的大额存单我要买二十万",
    "重疾险给我爸也来一份",
    "年底奖金到了再投5万进去",
    "活期里那十万帮我转成定期",
    "这个养老理财我也买一点",
    "我们村的合作社一起投这个农险",
    "教育金我想存十年的那种",
    "帮我认购那只新发的债基，3万",
]

REDEMPTIONS = [
    "那个分红险明年不续了",
    "这只基金卖了吧，拿着心慌",
    "去年在活动上买的那份保险能退吗",
]

# (line, the intent that stands, a label the model might give it)
STAYS = [
    ("我想买R4的基金，测评得到什么等级才能买", "risk_assessment", "risk_assessment"),
    ("谢谢你提醒我，差点就被那个假客服骗了", "chitchat", "chitchat"),
    ("这款理财封闭期中途能退吗", "product_inquiry", "product_inquiry"),
    ("国债在哪里买，手机上能买吗", "product_inquiry", "product_inquiry"),
    ("我们说好的周六见，我十点到", "chitchat", "chitchat"),
    ("我根本不懂基金，你给我讲讲区别", "product_inquiry", "product_inquiry"),
    ("APP一直打不开，是不是要更新", "account_service", "account_service"),
    ("理赔款打到卡上了吗，卡号6217001237812345678", "claim_service", "claim_service"),
]


@pytest.mark.parametrize("text", COMPLAINTS)
@pytest.mark.parametrize("model_said", ["account_service", "product_inquiry", "purchase_intent"])
def test_a_grievance_is_a_complaint(keywords: KeywordIntent, text: str, model_said: str) -> None:
    assert keywords.decisive(normalize(text).text, model_said) == "complaint"


@pytest.mark.parametrize("text", PURCHASES)
@pytest.mark.parametrize("model_said", ["product_inquiry", "account_service", "redemption_intent"])
def test_an_order_is_a_purchase(keywords: KeywordIntent, text: str, model_said: str) -> None:
    assert keywords.decisive(normalize(text).text, model_said) == "purchase_intent"


@pytest.mark.parametrize("text", REDEMPTIONS)
def test_leaving_is_a_redemption(keywords: KeywordIntent, text: str) -> None:
    assert keywords.decisive(normalize(text).text, "product_inquiry") == "redemption_intent"


@pytest.mark.parametrize(("text", "intent", "model_said"), STAYS)
def test_a_cue_overrules_only_what_it_lists(
    keywords: KeywordIntent, text: str, intent: str, model_said: str
) -> None:
    decided = keywords.decisive(normalize(text).text, model_said)
    assert (decided or model_said) == intent


# Lines the shipped intent model reads as another intent.
MISREAD = [
    ("储蓄卡我半年没动过，凭什么扣我50块管理费", "complaint"),
    ("分红比合同上演示的少了一大截", "complaint"),
    ("贷款批了半个月还没放款，装修队天天催", "complaint"),
    ("你们这是霸王条款", "complaint"),
    ("一分钱利息都没有还收费", "complaint"),
    ("客户经理电话也不接，消息也不回", "complaint"),
    ("大堂经理态度恶劣", "complaint"),
    ("买的时候说随时能取，现在又说要等30天", "complaint"),
    ("我要开通定投，每月两千", "purchase_intent"),
    ("重疾险给我爸也来一份", "purchase_intent"),
    ("我们村的合作社一起投这个农险", "purchase_intent"),
    ("那个分红险明年不续了", "redemption_intent"),
    ("这只基金卖了吧，拿着心慌", "redemption_intent"),
]


@pytest.mark.parametrize(("text", "intent"), MISREAD)
def test_the_analyzer_reports_the_decisive_intent(
    analyzer: Analyzer, text: str, intent: str
) -> None:
    assert analyzer.analyze(text, "customer").intent == intent


# (an accurate statement naming deposits as the protected products, the same words
# passing a product off as a deposit)
WHERE_PROTECTION_IS = [
    ("现在市面上保本的也就是存款和国债了", "这款理财保本的，就是存款，跟存款一样"),
    ("您问保本的，保本产品现在就是存款国债", "这个年金其实就是存款，比存款还稳"),
    ("您要绝对保本，保本的基本就是存款、国债这些", "这款净值型理财就跟存款一样，放心买"),
]


@pytest.mark.parametrize(("accurate", "violating"), WHERE_PROTECTION_IS)
def test_where_protection_is_left_is_no_deposit_claim(
    analyzer: Analyzer, accurate: str, violating: str
) -> None:
    assert "misleading_promotion" not in _violations(analyzer, accurate)
    assert "misleading_promotion" in _violations(analyzer, violating)


# The advisor teaching the customer to use the app themselves (长辈版, 字体调大, the password
# typed by the customer) is the opposite of taking over the account; the model alone read
# one such line as misleading promotion at 0.9 (``counter_evidence`` in rules/anchors.json,
# anchors 2026.12-33). A fee waiver offered for a sale stays a violation.
def test_teaching_the_app_is_no_promotion(analyzer: Analyzer) -> None:
    assert _violations(analyzer, "我来教您怎么切到长辈版，字会大一些，密码您自己输就行") == set()
    assert "improper_inducement" in _violations(analyzer, "您办这单，首年免年费我私下给您申请")

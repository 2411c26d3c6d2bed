"""Advisor lines read alone, eleventh round.

Classes of phrasing the rules missed on the tenth held-out set, each written afresh here
(none is taken from a data file):

- a product passed off as the bank's own savings or money (说白了就是咱们行的储蓄, 平台的钱
  其实就是咱们银行的钱) or a paid instalment as free (相当于没成本): misleading promotion;
- money routed to a card the advisor names as theirs (打到我这张卡), a cousin's account, or a
  deal done privately (咱们私下办): off-book dealing;
- a refund or money paid to the customer personally (我私下退您, 我个人再转您500, 心意少不了):
  improper inducement;
- buying in a relative's account or having a relative take the risk test: suitability
  evasion;
- taking the customer's phone to tap through, or telling them not to mind their account:
  account custody;
- knowing a firm's results before they are published: insider tip.

Each is checked against a line that shares its words and stays clean.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import KeywordIntent
from compliance_nlp.normalize import normalize
from tests.compliance_nlp.findings import line_violations as _violations


def _rule_reads(analyzer: Analyzer, text: str) -> set[str]:
    """What the rules alone flag (the model may catch a line today and miss it tomorrow)."""
    found = analyzer.matcher.find(normalize(text))
    return {f.category for f in found if f.severity == "violation"}


# (a line of the class, the category the rules give it, a line sharing its words that
# stays clean)
CLASSES = [
    (
        "增额寿说白了就是咱们银行自己的储蓄，利息还高",
        "misleading_promotion",
        "大额存单其实就是我们行的存款，受存款保险保护",
    ),
    (
        "那个网贷平台的钱实际上就是我们行的钱，放心",
        "misleading_promotion",
        "我这个账户的权限开不了，您稍等",
    ),
    (
        "信用卡分期相当于没成本，手续费可以忽略",
        "misleading_promotion",
        "这个月的账单分期手续费是0.6%，您算一下成本",
    ),
    (
        "理财到期了转到我姐夫的基金，收益高一截",
        "off_book_dealing",
        "您把钱转到您自己这张卡上就行",
    ),
    ("那个存单转让咱们私下办，价格好商量", "off_book_dealing", "资料我私下发您，您看完再定"),
    (
        "我手上有个线下的理财，钱转这个账户",
        "off_book_dealing",
        "线下网点也能办，钱转这个账户要本人",
    ),
    (
        "这单保险签下来，首年保费我私下退您一部分",
        "improper_inducement",
        "退保的话保费按合同退您现金价值",
    ),
    ("您在我这开户，我个人再转您500", "improper_inducement", "开户后您自己转500进去试试"),
    ("以后基金都在我这买，心意少不了", "improper_inducement", "您的心意我领了，基金您慢慢挑"),
    (
        "R4的买不了，拿您老伴的卡买，她是C4",
        "suitability_evasion",
        "您老伴的卡丢了的话，要她本人带身份证来挂失",
    ),
    (
        "您年纪超了测评过不了，让您孙子来替您做测评",
        "suitability_evasion",
        "让您女儿陪您来网点做测评，她帮您看看条款也好",
    ),
    (
        "基金转换步骤多，您手机给我，我来操作",
        "account_custody",
        "基金转换步骤多，您手机拿好，我一步步告诉您点哪",
    ),
    (
        "这些理财账户你不用管，我每月帮你调",
        "account_custody",
        "您的账户您自己管，我不碰密码",
    ),
    (
        "我这边知道它财报要超预期，明天就涨",
        "insider_tip",
        "我知道您着急，这家公司业绩要等年报出来才知道",
    ),
]


@pytest.mark.parametrize(("text", "category", "clean"), CLASSES)
def test_the_rules_read_the_class(analyzer: Analyzer, text: str, category: str, clean: str) -> None:
    assert category in _rule_reads(analyzer, text)
    assert _violations(analyzer, clean) == set()


def test_a_loss_made_good_personally_is_no_kickback(analyzer: Analyzer) -> None:
    # 我私人转给您 to make a loss good is a personal guarantee, not an inducement.
    found = _rule_reads(analyzer, "亏了的话我私人转给您补回来")
    assert "guaranteed_return" in found
    assert "improper_inducement" not in found


# Customer intent: phrasings that decide the intent over the model's label
# (``decisive`` in rules/intents.json, intents 2026.12-3). A broken promise about a
# product's quality (不是说稳的吗), a fee called a rip-off (也太黑了), a platform that gives
# no reason, or asking whether the advisor's conduct is normal is a complaint; taking a
# product (这款我要了) or applying for a loan is a purchase; asking to take money out early
# (能提前支取吗) or putting a certificate up for transfer is a redemption.
DECIDED = [
    ("净值型理财亏了两个点，不是说很稳的吗", "complaint", "product_inquiry"),
    ("赎回费收了1.5%，也太黑了吧", "complaint", "redemption_intent"),
    ("保单变更交了一个月了，客服也不说为什么", "complaint", "account_service"),
    ("理财经理让我把钱转给他朋友，这合规吗", "complaint", "product_inquiry"),
    ("那款三年期的养老储蓄我要了", "purchase_intent", "product_inquiry"),
    ("我想申请一笔经营贷，流水够不够", "purchase_intent", "account_service"),
    ("三年定期存了一年，能不能提前支取", "redemption_intent", "product_inquiry"),
    ("那张存单我想挂个转让，周转一下", "redemption_intent", "purchase_intent"),
    # intents 2026.12-4: the suitability assessment a product requires is a risk-assessment
    # question, applying for a premium waiver a claim, changing the card linked to an
    # account an account service, and putting a decision off is no purchase.
    ("买这个私募需要的风险等级是多少", "risk_assessment", "product_inquiry"),
    ("北交所那个适当性测试难不难", "risk_assessment", "product_inquiry"),
    ("我确诊了，重疾险能申请保费豁免吗", "claim_service", "product_inquiry"),
    ("基金账户绑定的卡想换成工资卡", "account_service", "purchase_intent"),
    ("那个年金险我再考虑考虑", "chitchat", "purchase_intent"),
]

# (a line the cue must leave alone, the label that stands)
LEFT_ALONE = [
    ("上次不是说密码不能告诉别人吗", "account_service"),
    ("那个R3的你们不是说我买不了吗", "purchase_intent"),
    ("这个黑色的卡面能换吗", "account_service"),
    ("这款理财的风险等级是多少", "product_inquiry"),
    ("这么贵，那我再想想", "product_inquiry"),
]


@pytest.fixture(scope="module")
def keywords() -> KeywordIntent:
    return KeywordIntent()


@pytest.mark.parametrize(("text", "intent", "model_said"), DECIDED)
def test_the_cue_decides_the_intent(
    keywords: KeywordIntent, text: str, intent: str, model_said: str
) -> None:
    assert keywords.decisive(normalize(text).text, model_said) == intent


@pytest.mark.parametrize(("text", "intent"), LEFT_ALONE)
def test_the_cue_leaves_other_lines_alone(keywords: KeywordIntent, text: str, intent: str) -> None:
    assert keywords.decisive(normalize(text).text, intent) in (None, intent)

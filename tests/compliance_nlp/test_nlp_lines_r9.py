"""Advisor lines read alone, ninth round: what the advisor says against the act the line
names. A first-person refusal (我不能替您保管), an instruction to answer truthfully, an
invitation to read the terms, the system or counter named as the way things are done,
a check of the risk level, a rumour of a collapse corrected: each speaks against a
violation the small model alone proposes (``DomainAnchors.countered``), so that finding
queues for review at most. An official notice or a customer told not to hurry is no false
urgency; a repayment the advisor will not make is no money handed over; what others show
off is reported, not promised. Every line is written for this test (none is taken from a
data file).
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import DomainAnchors
from compliance_nlp.normalize import normalize
from compliance_nlp.types import Turn
from tests.compliance_nlp.findings import line_violations as _violations


@pytest.fixture(scope="module")
def anchors() -> DomainAnchors:
    return DomainAnchors()


# (a line speaking against the act, the category, the same words turned into the act
# itself or None)
SPEAKS_AGAINST = [
    ("您的存单我不能替您收着，您放保险柜里就行", "account_custody", None),
    ("您的U盾我不能替您拿着，丢了去柜台补办就行", "account_custody", None),
    (
        "双录时问到收入，您如实回答就可以",
        "suitability_evasion",
        "双录时问到收入，您不用如实回答，说三十万就行",
    ),
    (
        "问卷第三题问的是投资经验，您按实际情况选",
        "suitability_evasion",
        "测评题别按实际情况答，按我给的来",
    ),
    ("下单前您先确认下风险等级符不符合", "suitability_evasion", None),
    (
        "家族办公室服务门槛是3000万，费用都写在协议里",
        "suitability_evasion",
        "起投100万，您资产差一点，我来想办法",
    ),
    (
        "这个重疾险您仔细看看责任免除那几条再决定",
        "misleading_promotion",
        "您不用看条款，直接签就行，保证没问题",
    ),
    ("合同我发您邮箱了，您先看下免责条款", "misleading_promotion", None),
    ("两家的分红险您对比一下说明书再定", "misleading_promotion", None),
    ("这笔我们走柜台流程办理，您带身份证来", "off_book_dealing", None),
    ("纸质的私下协议签不了，合同都得在系统里走", "off_book_dealing", None),
    (
        "您要是想买，我在系统里帮您登记一下预约",
        "off_book_dealing",
        "钱转我支付宝，我在系统里帮您下单",
    ),
    ("托管行换了不是暴雷，资金一直在托管账户里", "disparagement", None),
    (
        "私下签的协议是不受保护的，一定走柜台",
        "off_book_dealing",
        "这么做是违规的，不过我私下可以帮您办",
    ),
]


@pytest.mark.parametrize(("text", "category", "twin"), SPEAKS_AGAINST)
def test_a_line_speaking_against_the_act_counters_the_model(
    anchors: DomainAnchors, text: str, category: str, twin: str | None
) -> None:
    assert category in anchors.countered(normalize(text).text)
    if twin is not None:
        assert category not in anchors.countered(normalize(twin).text)


def test_a_refused_custody_is_no_model_violation(analyzer: Analyzer) -> None:
    text = "存折我这边不能帮您保管，您锁柜子里就行"
    assert "account_custody" not in _violations(analyzer, text)


def test_an_official_notice_without_pressure_is_no_false_urgency(rules_only: Analyzer) -> None:
    assert (
        _violations(rules_only, "总行发了文件，这款下个月停售，您不用急着买，先比较比较") == set()
    )
    assert "misleading_promotion" in _violations(rules_only, "下个月停售了，赶紧买")


def test_a_repayment_the_advisor_will_not_make_is_no_money_handed_over(
    rules_only: Analyzer,
) -> None:
    assert _violations(rules_only, "您卖出部分基金还款就行，我这边不能代您操作") == set()
    assert "off_book_dealing" in _violations(rules_only, "还款的钱转我这边就行")


def test_what_others_show_off_is_reported_not_promised(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "群里晒出来的都是赚的，亏钱的人不吭声") == set()
    assert "misleading_promotion" in _violations(rules_only, "这款基金买的人都是赚的")


def test_every_shipped_rule_offers_its_own_rewording(rules_only: Analyzer) -> None:
    ruleset = rules_only.ruleset
    missing = [r.id for r in ruleset.rules if r.id not in ruleset.suggestions.by_rule]
    assert missing == []


# The act in words the rules did not know: business or money passed to an outside party
# the advisor names, a trip paid for a sale, a gift in scare quotes, a level raised by
# hand, a relative's name for an age or level the customer lacks, a proof arranged,
# money said to be about to push a stock, a rival's product called watered down.
ACT_IN_NEW_WORDS = [
    ("想退保的话我认识一个退保团队，您把钱转给他们就行", "off_book_dealing"),
    ("我给您介绍一家外部机构的理财，单子挂到我朋友那边", "off_book_dealing"),
    ("配资找我，我这有渠道，1比5", "off_book_dealing"),
    ("保单想全退就找我，我有门路能办下来，给点辛苦费就行", "off_book_dealing"),
    ("买满三十万，云南五日游我全包", "improper_inducement"),
    ("这单成了，我私下再给您准备一份‘心意’", "improper_inducement"),
    ("您风险等级够不上，我找后台手动调一下就能买", "suitability_evasion"),
    ("您爸年纪超了，换成您儿子的名义投保就行", "suitability_evasion"),
    ("资产证明我找人帮您搞定", "suitability_evasion"),
    ("明天有大资金进场拉这只票，现在上车", "insider_tip"),
    ("那家农商行的理财水分很大，没咱们正规", "disparagement"),
]


@pytest.mark.parametrize(("text", "category"), ACT_IN_NEW_WORDS)
def test_the_act_in_new_words_is_flagged(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


def test_a_coached_answer_stays_flagged_before_a_later_warning(rules_only: Analyzer) -> None:
    # the concept's gap reached 千万别 and read the whole as refuted
    text = "面签的时候您就说收入稳定，千万别提您刚辞职"
    assert "suitability_evasion" in _violations(rules_only, text)


@pytest.mark.parametrize(
    "text",
    ["手机银行存款也是存款，一样有存款保险", "线上存款属于银行存款，一样受存款保险保护"],
)
def test_a_deposit_keeps_its_deposit_insurance(rules_only: Analyzer, text: str) -> None:
    assert "misleading_promotion" not in _violations(rules_only, text)


def test_a_line_calling_the_act_unlawful_is_no_model_violation(analyzer: Analyzer) -> None:
    text = "私下签协议是不受保护的，一定走柜台"
    assert "off_book_dealing" not in _violations(analyzer, text)


def test_a_statutory_fund_behind_a_policy_is_no_personal_guarantee(rules_only: Analyzer) -> None:
    text = "万一公司出事，有保险保障基金兜底，保单会转给别家接着管"
    assert "guaranteed_return" not in _violations(rules_only, text)
    assert "guaranteed_return" in _violations(rules_only, "亏了算我的，我给您兜底")


def test_a_personal_guarantee_stays_one_after_a_question_about_deposit_insurance(
    rules_only: Analyzer,
) -> None:
    # the customer's words exempt the longer concept span, not the guarantee inside it
    context = [Turn("customer", "这笔有存款保险托着吧")]
    found = rules_only.analyze("真亏了算我的，我给您兜底", "advisor", context=context)
    assert "guaranteed_return" in {
        f.category for f in found.violations if f.severity == "violation"
    }

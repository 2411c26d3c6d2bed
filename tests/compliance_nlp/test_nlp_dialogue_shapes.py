"""Shapes of question and answer the frames read as classes, not as single phrasings.

A short answer carries a name or a dialect word (「能的叔」, 「实得，冇问题」); a question is
no refusal (「能不能登进去」), nor is a fallback (「实在不行」); a risk question is broken
by denying the risk, not by agreeing that it is there; a product compared with a deposit
is not a deposit; the cost of a loan stated is a fact. The sentences are written for
this test, not copied from a labelled file.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.pair import Stance
from compliance_nlp.types import Turn


def _violations(analyzer: Analyzer, question: str, reply: str) -> dict[str, int | None]:
    result = analyzer.analyze(reply, "advisor", context=[Turn("customer", question)])
    return {f.category: f.context_index for f in result.violations if f.severity == "violation"}


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # a short affirmative with the customer's name or a dialect word
        ("这个理财一年下来起码有三个点吧", "能的叔", "guaranteed_return"),
        ("我妈的本金到时候拎得返嘛", "实得，冇问题", "guaranteed_return"),
        ("你讲的4%是确定拿得到的吧", "确定的姐", "guaranteed_return"),
        ("我要的是本钱一分都不能少的那种", "能，这款完全符合", "guaranteed_return"),
        # a risk question is broken by denying the risk
        ("那个R4的产品波动是不是很大", "哪有，您想多了", "misleading_promotion"),
        ("我要是住院了，这个保险肯定能全额报吧", "必须的，放心", "misleading_promotion"),
        # 能不能 asks, 实在不行 falls back: neither refuses
        ("登录密码我改成你说的那个了", "好，我这边试试能不能登进去", "account_custody"),
        ("我是C1的，可那个R3的挺想买，你想想办法", "实在不行放您女儿名下买", "suitability_evasion"),
        ("两融要半年经验，我才做了三个月，有办法吗", "有，用您爱人的户开", "suitability_evasion"),
        # the institution's channel is down: money goes to the advisor instead
        ("手机银行一直在维护，今天就截止了", "没事，您先转我，我给您办", "off_book_dealing"),
        ("存款都挪到你这儿来，你打算怎么谢我", "放心，不会让您白跑的", "improper_inducement"),
        ("下周那只新股首日会不会破发", "破不了，妥妥的", "insider_tip"),
    ],
)
def test_a_class_of_answers_goes_along(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    found = _violations(rules_only, question, reply)
    assert category in found, found
    assert found[category] == 0


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("那个R4的产品风险是不是挺高的", "对，R4是中高风险，净值会有起伏"),
        ("理赔交上去十天了还没消息", "会的，我再帮您催一下"),
        ("贷款利息怎么算", "年化3.6%，按天计息"),
        ("我朋友讲呢只基金唔会蚀", "冇这回事，基金都有风险，千祈咪信"),
        ("我要投诉，你们卖的基金亏了得负责", "好的，您可以打客服热线或者12378，我如实配合"),
    ],
)
def test_refusals_facts_and_everyday_answers_stay_clean(
    analyzer: Analyzer, question: str, reply: str
) -> None:
    assert _violations(analyzer, question, reply) == {}


def test_a_product_compared_with_a_deposit_is_not_a_deposit(rules_only: Analyzer) -> None:
    # The deposit fact clears what is said after a question about a deposit; a reply
    # that sets a product above deposits keeps the line rules' findings.
    found = _violations(rules_only, "这款跟存款比怎么样", "比存款还稳，保本保收益")
    assert "guaranteed_return" in found
    assert _violations(rules_only, "三年定期到期本金都在吧", "在的，到期本息一起回到卡上") == {}


def test_a_refusal_after_a_pointer_opens_the_reply() -> None:
    stance = Stance.load()
    assert "^refuse" in stance.read("这个不行，得您本人来")
    assert "^refuse" in stance.read("哎，不能这么弄")
    assert "^refuse" not in stance.read("这样吧，我帮您弄")


def test_an_answer_that_goes_along_keeps_the_question_open(rules_only: Analyzer) -> None:
    asked = Turn("customer", "我是C2的，那个R4的能买吗")
    along = [asked, Turn("advisor", "可以的，我来想想办法"), Turn("customer", "要带什么")]
    result = rules_only.analyze("带上身份证就行，剩下的我来弄", "advisor", context=along)
    found = {f.category: f.context_index for f in result.violations}
    assert found.get("suitability_evasion") == 0, found
    # A refusal closes it: what follows answers the later turn only.
    refused = [asked, Turn("advisor", "买不了哦，超出您的风险等级了"), Turn("customer", "那就R2吧")]
    assert rules_only.analyze("好，清单发您了", "advisor", context=refused).violations == ()


def test_confirming_a_rivals_trouble_is_disparagement(rules_only: Analyzer) -> None:
    asked = "那家小贷公司是不是要跑路了"
    assert "disparagement" in _violations(rules_only, asked, "嗯，何止是传闻")
    assert _violations(rules_only, asked, "这个我不清楚，以官方公告为准") == {}
    # About deposits here: deposit insurance stated is a fact, not a rival run down.
    deposits = "存款放你们行，银行要是倒闭了咋办"
    assert _violations(rules_only, deposits, "是的，有存款保险，50万以内本息都受保护") == {}

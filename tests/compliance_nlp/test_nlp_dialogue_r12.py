"""Classes of question and answer read in context, round twelve, in wording written for
this test (none copied from a labelled file).

A rule or restriction explained (只能用于, 不能用于, 中途不能取, 挪用会被…收回, 是监管红线,
最长…一期, 到期要还) speaks against what the model reads into such a line; beside a
promise or a private way round it, it does not. A reply that keeps a credential with the
customer (只能您自己知道) or opens with a doubled no (别别别) refuses handing it over, and a
customer thanking the advisor for something done before (谢谢您上次帮我…) asks for
nothing, so a welcome (不客气，有需要找我) agrees to nothing. A customer who says their own
holding is a time deposit (我这个是定期) asks a fact, and a yes to it is accurate.
「我们都没有」 after a gift or a cashback scopes over it. A comparison that puts protection on
the deposit and denies it for the product (定期是保本的，这个不保本) promises nothing, and
「零风险的没有」 said as a whole clause answers that none exists; saying where protection is
(保本的话就是存款类, 跟存款一样的就是存款本身) likens no product to a deposit, and a term
defined (飞单就是…, 私售是指…) deals in nothing.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import DomainAnchors
from compliance_nlp.normalize import normalize
from compliance_nlp.types import Turn
from tests.compliance_nlp.findings import reply_violations as _violations


@pytest.mark.parametrize(
    ("text", "twin", "category"),
    [
        (
            "消费贷的钱不能用于炒股，这是监管的红线",
            "消费贷的钱不能用于炒股，不过您转我卡上我帮您买",
            "off_book_dealing",
        ),
        (
            "这笔贷款只能用于装修，挪用了会被银行收回",
            "这笔贷款只能用于装修，但是拿去买理财也没人查",
            "misleading_promotion",
        ),
        (
            "这款理财封闭期内不能赎回，您要用钱就先别买",
            "这款理财保本的，封闭期内不能赎回而已",
            "misleading_promotion",
        ),
        (
            "质押贷款最长12个月，到期要还本",
            "质押贷款最长12个月，我私下再帮您续",
            "insider_tip",
        ),
    ],
)
def test_a_rule_explained_speaks_against_the_model_finding(
    text: str, twin: str, category: str
) -> None:
    anchors = DomainAnchors()
    assert category in anchors.countered(normalize(text).text)
    assert category not in anchors.countered(normalize(twin).text)


@pytest.mark.parametrize(
    "reply",
    [
        "别别别，登录密码只有您自己知道，我打电话教您操作",
        "不不不，验证码只能您自己记着，我在旁边教您点",
    ],
)
def test_keeping_the_credential_with_the_customer_refuses(rules_only: Analyzer, reply: str) -> None:
    asked = "我把登录密码发你，你帮我申购吧"
    assert "account_custody" not in _violations(rules_only, [Turn("customer", asked)], reply)
    # going along with it stays a violation
    assert "account_custody" in _violations(
        rules_only, [Turn("customer", asked)], "好的，发我吧，我来帮您点"
    )


def test_a_thanks_for_something_done_asks_for_nothing(rules_only: Analyzer) -> None:
    reply = "不用谢🙏有需要随时找我"
    thanks = "谢谢您之前帮我办的基金定投，很省心"
    assert "account_custody" not in _violations(rules_only, [Turn("customer", thanks)], reply)
    # a thanks that goes on to a new request is still a request
    again = "谢谢您之前帮我办的定投，这次也您帮我操作吧"
    assert "account_custody" in _violations(rules_only, [Turn("customer", again)], "好的，我来")


@pytest.mark.parametrize(
    "question",
    ["到期了本金利息都少不了吧，我这个是定期", "我这是大额存单，到期本息都能拿回来吧"],
)
def test_a_yes_about_the_customers_own_time_deposit_is_accurate(
    rules_only: Analyzer, question: str
) -> None:
    assert not _violations(rules_only, [Turn("customer", question)], "对的👍")
    # the same yes about a wealth product is still a promise
    product = "到期了本金利息都少不了吧，我这个理财是定期的"
    assert "guaranteed_return" in _violations(rules_only, [Turn("customer", product)], "对的👍")


@pytest.mark.parametrize(
    "reply", ["礼品和返现我们这边都没有，就是年费全免", "开户礼、返现这些我们一概没有"]
)
def test_we_have_none_of_it_scopes_over_the_inducement(rules_only: Analyzer, reply: str) -> None:
    asked = "办这个卡送什么"
    assert "improper_inducement" not in _violations(rules_only, [Turn("customer", asked)], reply)
    # saying only the rivals have none of it is still an offer
    offer = "返现我们都有，别家都没有"
    assert "improper_inducement" in _violations(rules_only, [Turn("customer", asked)], offer)


@pytest.mark.parametrize(
    "reply", ["定期是保本的，这款理财不保本，收益高一点", "存单才保本，这只基金非保本"]
)
def test_a_comparison_that_denies_protection_for_the_product(
    rules_only: Analyzer, reply: str
) -> None:
    asked = "这个跟定期比哪个好"
    assert "guaranteed_return" not in _violations(rules_only, [Turn("customer", asked)], reply)
    # the same comparison that extends the protection to the product stays a promise
    twin = "定期是保本的，这款理财也保本"
    assert "guaranteed_return" in _violations(rules_only, [Turn("customer", asked)], twin)


@pytest.mark.parametrize(
    "reply", ["无风险的产品没有，稳健一点的可以看看", "零风险的东西没有，低风险的倒是有"]
)
def test_none_of_it_exists_answers_the_claim(rules_only: Analyzer, reply: str) -> None:
    asked = "有没有无风险的理财"
    assert "misleading_promotion" not in _violations(rules_only, [Turn("customer", asked)], reply)
    # saying so and then likening the product to it stays a violation
    twin = "零风险的没有，但这款跟零风险差不多"
    assert "misleading_promotion" in _violations(rules_only, [Turn("customer", asked)], twin)


def test_none_of_it_exists_speaks_against_the_model_finding() -> None:
    anchors = DomainAnchors()
    said = "无风险的理财没有，稳健也不等于没有风险"
    assert "misleading_promotion" in anchors.countered(normalize(said).text)
    twin = "无风险的理财没有，不过这款跟无风险差不多"
    assert "misleading_promotion" not in anchors.countered(normalize(twin).text)


@pytest.mark.parametrize(
    ("asked", "reply"),
    [
        ("想要本金有保障的，有推荐吗", "保本的话就是存款类：通知存款、定期这些，基金都不保本"),
        ("和存款差不多的还有啥", "跟存款一样的只能是存款本身，比如大额存单"),
    ],
)
def test_saying_where_protection_is_likens_nothing(
    rules_only: Analyzer, asked: str, reply: str
) -> None:
    assert "misleading_promotion" not in _violations(rules_only, [Turn("customer", asked)], reply)
    # naming the product as one of them stays a violation
    twin = "跟存款一样的就是存款类，这款理财也算"
    assert "misleading_promotion" in _violations(rules_only, [Turn("customer", asked)], twin)


def test_a_term_defined_is_no_dealing(rules_only: Analyzer) -> None:
    asked = "什么叫飞单"
    said = "飞单指的是员工卖不是本行代销的产品，您在手机银行能查到的才是正规的"
    assert "off_book_dealing" not in _violations(rules_only, [Turn("customer", asked)], said)
    # a definition that goes on to offer it stays a violation
    offer = "飞单就是不走系统，放心，收益更高，转我个人卡就行"
    assert "off_book_dealing" in _violations(rules_only, [Turn("customer", asked)], offer)

"""Classes of question and answer read in context, round nine, in wording written for
this test (none copied from a labelled file).

A lawful question (a risk the customer states himself, a lower commission, red packets
in a family group) makes nothing of the reply, but no longer hides what the reply says in
its own words; a warning that runs another firm down (「…千万别碰」) is no refusal; a
promise that something is 铁定 answers a return question; a question about a tip
(「那个消息…」, 「肯定涨吧」) names insider_tip; a savings policy is no deposit.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.dialogue import DialogueRules
from compliance_nlp.rules import load_ruleset
from compliance_nlp.types import Turn
from tests.compliance_nlp.findings import reply_violations as _violations


@pytest.mark.parametrize(
    ("turns", "reply", "category"),
    [
        # the customer says it is not capital-protected, the advisor says it is
        ([Turn("customer", "这款净值型的应该不保本吧")], "保本的呀，您放心", "guaranteed_return"),
        # a request for a lower commission is lawful; doubling a rival's cash-back is not
        (
            [Turn("customer", "佣金能降到万一吗，隔壁券商还返现金")],
            "可以，他们返多少我这边翻倍给您",
            "improper_inducement",
        ),
        # red packets in a group chat earlier do not excuse a private one for a purchase
        (
            [
                Turn("customer", "群里抢红包好热闹"),
                Turn("advisor", "哈哈大家开心就好"),
                Turn("customer", "那个50万的年金我准备下单了"),
            ],
            "好的，下单后我私下单独给您包个大红包",
            "improper_inducement",
        ),
    ],
)
def test_a_lawful_question_does_not_hide_the_reply(
    analyzer: Analyzer, turns: list[Turn], reply: str, category: str
) -> None:
    assert category in _violations(analyzer, turns, reply)


@pytest.mark.parametrize(
    "reply",
    [
        "他们那种小平台出了事电话都打不通，千万别碰",
        "他们管理层都是外行，去年一堆产品破净，别碰",
    ],
)
def test_a_warning_that_runs_a_rival_down_is_no_refusal(analyzer: Analyzer, reply: str) -> None:
    turns = [Turn("customer", "隔壁那家证券公司你觉得咋样")]
    assert "disparagement" in _violations(analyzer, turns, reply)


def test_a_warning_that_corrects_stays_clean(analyzer: Analyzer) -> None:
    turns = [Turn("customer", "别家说可以私下签个协议拿更低佣金，有这种事吗")]
    reply = "没有这回事，私下签的东西不受保护，您千万别碰"
    assert "disparagement" not in _violations(analyzer, turns, reply)


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        ("下一期还是6.5吧，这个数是铁定能拿到的吧", "铁定的", "guaranteed_return"),
        ("这张储蓄保单二十年后是不是一定翻倍", "是的，没问题", "guaranteed_return"),
    ],
)
def test_answers_the_question_names(
    analyzer: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(analyzer, [Turn("customer", question)], reply)


def test_questions_name_their_categories() -> None:
    rules = DialogueRules(load_ruleset())
    assert "insider_tip" in rules.categories("你上回讲的那个消息还准不准")
    assert "insider_tip" in rules.categories("年底肯定涨吧")
    # a mention of another firm names a topic, not a category
    assert rules.categories("别家的理财怎么样") == frozenset()


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # a product the bank does not sell, fetched for the customer
        (
            "你们这没有那种雪球结构，YY证券那边有，你能帮我搞一份吗",
            "可以的，我有熟人",
            "off_book_dealing",
        ),
        # a gift, a higher rate or a price gap made up in private
        ("我买三十万的话，能送我个扫地机器人不", "可以啊，我去申请一台", "improper_inducement"),
        (
            "要是我把钱存你们这，利息能再给我加点吗",
            "挂牌就这些，剩下的我想想办法",
            "improper_inducement",
        ),
        ("从别家挪过来亏的那点，你能补点差价吗", "能，亏多少我给您补多少", "improper_inducement"),
    ],
)
def test_requests_in_other_words(
    analyzer: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(analyzer, [Turn("customer", question)], reply)


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        # deposit insurance is no insurance product: the question is about a deposit
        ("我放的美元存款要是银行出问题，也有存款保险吗", "有的，美元存款同样在存款保险范围内"),
        # the customer asks whether to be wary of a promise; the advisor agrees
        (
            "要是有人跟我讲保证年化8%，我是不是得小心点",
            "对，除了国债和存款，谁保证这个数都要多留个心",
        ),
    ],
)
def test_lawful_questions_stay_clean(analyzer: Analyzer, question: str, reply: str) -> None:
    assert _violations(analyzer, [Turn("customer", question)], reply) == set()


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # cash to be collected by the advisor
        ("我手上有三万现金，你下班来我家拿一下，顺便帮我存了", "好嘞，七点到", "off_book_dealing"),
        # a rival running it down: 骗人的 beside a refusal word
        (
            "网上那款百万医疗比你们便宜好多",
            "便宜没好货，全是骗人的，理赔一分钱不给",
            "disparagement",
        ),
        # a rival that cannot pay, confirmed
        ("Y信托最近是不是兑付不了了", "嗯，他们差不多了", "disparagement"),
        # a dated recovery asked about is a price forecast
        ("亏了15% 月底能回本吗", "能", "insider_tip"),
    ],
)
def test_more_questions_and_answers(
    analyzer: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(analyzer, [Turn("customer", question)], reply)


def test_the_customers_own_margin_call_is_no_rival(analyzer: Analyzer) -> None:
    turns = [Turn("customer", "融资仓位会不会爆仓啊")]
    reply = "会的，维持担保比例跌破130%会通知您补，再跌会被平仓"
    assert "disparagement" not in _violations(analyzer, turns, reply)


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # a floor the customer names, confirmed
        ("这个债基是不是每年保底给4%？朋友跟我说的", "嗯嗯是的", "guaranteed_return"),
        # foreign notes bought privately
        (
            "家里有些港币现钞，你能不能按高一点的价收了",
            "可以，您拿来我瞧瞧，价钱好商量",
            "off_book_dealing",
        ),
        # a rival's offer called 画饼
        ("城商行那边说五年期给我4%", "那都是画饼，到期一分都拿不到", "disparagement"),
        # the customer says the advisor knows the login, the advisor takes it on
        ("风险测评又过期了，你帮我弄下，账号你都知道", "好，我晚点帮您弄", "account_custody"),
        # a claim the customer quotes, agreed with in other words
        ("朋友圈说这个货币基金是最安全的理财", "人家说得在理", "misleading_promotion"),
    ],
)
def test_the_frames_read_these_without_the_models(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(rules_only, [Turn("customer", question)], reply)

"""Classes of question and answer read in context, round eleven, in wording written for
this test (none copied from a labelled file).

A kickback named only to say it cannot be sent (这些都不能发) or a rumour named only to
say it must not be touched (这种消息碰不得) is a refusal; putting the dual recording off
until the customer has made up their mind (先不录，等您考虑清楚) coaches nothing; a
customer who names a time deposit and asks whether "this" counts as a deposit asks a
fact, and a yes is no misleading promotion. A bare 👌 after a mention of another firm
says yes to no question and runs nobody down. A customer who then moves to act on
what the advisor went along with (那我先买点？) keeps the question open. Sending the
customer to the risk assessment first (先做个测评) and saying more return asks more
risk (想多拿就得多担风险) speak against what the model reads into such lines. A plain
yes to a customer who doubts the answer (你这么确定？) repeats the answer, and 相信我
is such a yes.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import DomainAnchors
from compliance_nlp.normalize import normalize
from compliance_nlp.types import Turn
from tests.compliance_nlp.findings import reply_violations as _violations


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        (
            "我介绍了好几个同事来买基金，你怎么也得意思一下吧",
            "心意我领了，返佣这种东西都不能发，公司规定死的",
            "improper_inducement",
        ),
        (
            "邻居说有只票下个月要重组，让我先埋伏进去",
            "传言听听就算了，真要是内部消息那就更不能碰了",
            "insider_tip",
        ),
        (
            "录像的时候问我自己懂不懂风险，我该怎么回答",
            "您照实回答就好，要是还有疑问咱们先不录，等您考虑清楚了再约",
            "suitability_evasion",
        ),
    ],
)
def test_naming_an_act_to_refuse_it_is_no_violation(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category not in _violations(rules_only, [Turn("customer", question)], reply)


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        (
            "我介绍了好几个同事来买基金，你怎么也得意思一下吧",
            "返佣我私下给您转过去，别声张",
            "improper_inducement",
        ),
        (
            "邻居说有只票下个月要重组，让我先埋伏进去",
            "我这也拿到内部消息了，赶紧上",
            "insider_tip",
        ),
        (
            "录像的时候问我自己懂不懂风险，我该怎么回答",
            "先不录，我跟您说，一会儿问什么您都说了解",
            "suitability_evasion",
        ),
    ],
)
def test_the_act_itself_still_counts(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(rules_only, [Turn("customer", question)], reply)


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        (
            "家里拆迁款两百万，准备买定期存款，这个算存款吧",
            "对，定期存款就是存款，有存款保险，50万以内",
        ),
        (
            "卖了套房子，钱想转大额存单，这个算存款吗",
            "属于的，大额存单就是存款，本息50万以内有存款保险",
        ),
    ],
)
def test_a_named_deposit_asked_about_is_a_fact(
    rules_only: Analyzer, question: str, reply: str
) -> None:
    assert "misleading_promotion" not in _violations(
        rules_only, [Turn("customer", question)], reply
    )
    # a wealth product called "this" is still no deposit
    product = "这款理财收益比定期高，这个算存款吧"
    assert "misleading_promotion" in _violations(
        rules_only, [Turn("customer", product)], "算的，跟存款一个意思"
    )


@pytest.mark.parametrize(
    "question",
    ["隔壁那家银行存款利率高，我打算转过去", "想把钱挪到别的券商，那边佣金便宜"],
)
def test_an_emoji_nod_to_another_firm_runs_nobody_down(rules_only: Analyzer, question: str) -> None:
    assert "disparagement" not in _violations(rules_only, [Turn("customer", question)], "👌")
    # words that run the other firm down still do
    assert "disparagement" in _violations(
        rules_only, [Turn("customer", question)], "👌那边靠不住的"
    )


_TIP = [
    Turn("customer", "听说那家医药公司要被国资收购了？我手上正好有笔闲钱"),
    Turn("advisor", "嗯，消息挺准，懂的"),
]


@pytest.mark.parametrize("move", ["那我先买点？", "那我今天就上？"])
def test_acting_on_what_was_gone_along_with_keeps_the_question_open(
    rules_only: Analyzer, move: str
) -> None:
    turns = [*_TIP, Turn("customer", move)]
    assert "insider_tip" in _violations(rules_only, turns, "赶紧的")
    # after a refusal the same move asks nothing forbidden
    refused = [_TIP[0], Turn("advisor", "这种消息我们不能谈，也别信"), Turn("customer", move)]
    assert "insider_tip" not in _violations(rules_only, refused, "可以，先做个风险测评")


@pytest.mark.parametrize(
    ("text", "twin", "category"),
    [
        # the assessment comes first: the opposite of going round it
        (
            "行，那您先做一下风险测评，结果出来再看",
            "测评我帮您做，选最后一个就行",
            "suitability_evasion",
        ),
        ("没问题，得先做个问卷评估", "问卷不用做，我直接给您下单", "suitability_evasion"),
        # more return asks more risk: a disclosure
        (
            "这两年利率一直降，要多赚就得承担更多风险，您自己权衡",
            "要多赚就买这款，风险基本没有",
            "misleading_promotion",
        ),
    ],
)
def test_a_line_that_speaks_against_the_model_finding(text: str, twin: str, category: str) -> None:
    anchors = DomainAnchors()
    assert category in anchors.countered(normalize(text).text)
    assert category not in anchors.countered(normalize(twin).text)


@pytest.mark.parametrize(
    ("asked", "answer", "category"),
    [
        ("下周那只票有重组消息吗", "有，周一前进", "insider_tip"),
    ],
)
@pytest.mark.parametrize("doubt", ["你这么确定？", "你就这么有把握？"])
def test_a_yes_to_a_doubted_answer_repeats_it(
    rules_only: Analyzer, asked: str, answer: str, category: str, doubt: str
) -> None:
    turns = [Turn("customer", asked), Turn("advisor", answer), Turn("customer", doubt)]
    assert category in _violations(rules_only, turns, "放心")
    # a refusal doubted and confirmed stays a refusal
    refused = [Turn("customer", asked), Turn("advisor", "没有的事，别信"), Turn("customer", doubt)]
    assert category not in _violations(rules_only, refused, "是的")


@pytest.mark.parametrize("reply", ["信我就对了", "相信我"])
def test_trust_me_is_an_assurance(rules_only: Analyzer, reply: str) -> None:
    asked = "下周那只票有重组消息吗"
    turns = [
        Turn("customer", asked),
        Turn("advisor", "有，周一前进"),
        Turn("customer", "你就这么有把握？"),
    ]
    assert "insider_tip" in _violations(rules_only, turns, reply)
    refused = [
        Turn("customer", asked),
        Turn("advisor", "没有的事，别信"),
        Turn("customer", "真没有？"),
    ]
    assert "insider_tip" not in _violations(rules_only, refused, reply)

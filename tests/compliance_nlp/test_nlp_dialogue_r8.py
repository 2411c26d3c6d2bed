"""Classes of question and answer read in context, round eight, in wording written for
this test (none copied from a labelled file).

A thread typed in pinyin is read in characters (a yes in pinyin goes along, a refusal
in pinyin stays clean); a fixed yield read off a seven-day figure is a misleading
description; a bare amount answers a request to hand money over; the other way, an
advisor's warning against a scam group runs down no licensed rival, a bank's own
card-opening gift is no money off the books, and a yes to a risk the customer states
himself is a fact.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.pair import Stance
from compliance_nlp.types import Turn
from tests.compliance_nlp.findings import reply_violations as _violations


def test_pinyin_runs_read_in_characters() -> None:
    stance = Stance.load()
    assert stance.romanise("zhe ge li cai bao ben ma") == "这个理财保本吗"
    assert stance.romanise("dui de, mei wen ti") == "对的, 没问题"
    # English words and product codes are no pinyin; a lone syllable is left alone
    assert stance.romanise("app上买etf") == "app上买etf"
    assert stance.romanise("hello world") == "hello world"
    assert stance.romanise("ma") == "ma"


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # pinyin question, pinyin answer
        ("zhe ge li cai bao ben ma", "dui de, mei wen ti", "guaranteed_return"),
        ("他们说这个跟定期 shi yi hui shi", "shi de, yi yang de", "misleading_promotion"),
        # a seven-day figure read as a fixed year
        (
            "页面上七日年化写着2.8%，那我放一年就能拿2.8%吧",
            "对，一年就这么多",
            "misleading_promotion",
        ),
        # a bare amount answers a request to hand the money over
        ("我人在外地，认购款怎么交给你", "8万整", "off_book_dealing"),
    ],
)
def test_answer_goes_along(analyzer: Analyzer, question: str, reply: str, category: str) -> None:
    assert category in _violations(analyzer, [Turn("customer", question)], reply)


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        # a pinyin refusal
        ("zhe ge li cai bao ben ma", "bu bao ben de, you feng xian"),
        # a scam warning runs down no licensed rival
        (
            "有个陌生群里的老师说跟着他买XX股份必涨，你觉得呢",
            "这种都是荐股诈骗的套路，别信，直接拉黑",
        ),
        # the bank's own card-opening gift
        (
            "我单位工资转到你们行代发了，听说开卡有礼？",
            "有的，按活动规则在APP活动页领取就行",
        ),
        # agreeing with a risk the customer states
        ("分红险的分红不一定有，对吧", "是的"),
        # a deposit named as the safe place, with its insurance
        ("30万放哪最稳当", "最稳的是定期或大额存单，受存款保险保护，收益低一点"),
    ],
)
def test_answer_left_alone(analyzer: Analyzer, question: str, reply: str) -> None:
    assert not _violations(analyzer, [Turn("customer", question)], reply)


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        ("wo ba yan zheng ma fa ni", "hao de", "account_custody"),
        ("ni bang wo zuo ce ping xing bu xing", "xing, wo lai nong", "suitability_evasion"),
    ],
)
def test_pinyin_answer_is_read_as_the_question_asks(
    analyzer: Analyzer, question: str, reply: str, category: str
) -> None:
    # the line model reads characters: its guess at a pinyin line is no evidence
    assert _violations(analyzer, [Turn("customer", question)], reply) == {category}

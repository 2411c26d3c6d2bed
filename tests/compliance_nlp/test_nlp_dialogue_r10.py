"""Classes of question and answer read in context, round ten, in wording written for
this test (none copied from a labelled file).

「不方便多说」 beside a yes is a hint, not a refusal; money a product pays out to the
customer (每年给我发钱) is no kickback; "not a cent less" and "a gain on entry" ask
for a guarantee; doubt cast on a rival's safety (说关就关, 钱都不一定取得出来) or its
claims called a gimmick runs it down; a rule brushed aside (规定归规定) goes round it; an
insider asking to trade his own company's stock asks about inside information; an
entry threshold (不低于50万) is a fact, not a return; a short follow-up (「具体多少」,
「怎么付」) keeps the question the advisor went along with open; a stance word negated in
place (不好说, 拿不回来) or heading a longer phrase (有的还会) is no yes.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.dialogue import DialogueRules
from compliance_nlp.normalize import normalize
from compliance_nlp.pair import Stance
from compliance_nlp.rules import load_ruleset
from compliance_nlp.types import Turn
from tests.compliance_nlp.findings import reply_violations as _violations


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("那家做芯片的最近是不是有啥动静", "确实有，我不能多说"),
        ("你们研究所是不是早就知道那个消息了", "是有，但我不能多讲"),
    ],
)
def test_withholding_beside_a_yes_is_no_refusal(
    rules_only: Analyzer, question: str, reply: str
) -> None:
    assert "insider_tip" in _violations(rules_only, [Turn("customer", question)], reply)
    # withholding beside a plain no still refuses
    clean = "没有什么消息，我也不能多说"
    assert "insider_tip" not in _violations(rules_only, [Turn("customer", question)], clean)


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # "not a cent less" asks for the principal
        ("我这笔养老钱放进去，以后一分钱也不会少吧", "对的，放心吧", "guaranteed_return"),
        # a gain that comes on entry
        ("按九折认购的话，那不是一买进就赚了10%", "就是这个理", "guaranteed_return"),
        # doubt cast on a rival's safety
        (
            "我在一家民营银行也存了点",
            "那您得留个心，他们那种说关就关，钱都不一定取得出来",
            "disparagement",
        ),
        # a rival's claim called a gimmick
        ("别家的养老理财宣传说是专门给老人设计的", "那都是噱头", "disparagement"),
        # a rule brushed aside
        ("系统不是说C2只能买R2吗", "规定归规定，我这边可以操作", "suitability_evasion"),
    ],
)
def test_answers_in_their_question(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(rules_only, [Turn("customer", question)], reply)


def test_money_a_product_pays_the_customer_is_no_kickback(rules_only: Analyzer) -> None:
    turns = [Turn("customer", "这个年金以后每年给我发钱，一直发到八十岁是吧")]
    assert "improper_inducement" not in _violations(rules_only, turns, "是的")
    rules = DialogueRules(load_ruleset())
    assert "improper_inducement" not in rules.categories("孩子上学那笔钱留给我闺女的钱够不够")
    # a sum handed over still asks for one
    assert "improper_inducement" in rules.categories("你私下给我两千块行不行")


def test_an_insider_asking_to_trade_asks_about_inside_information() -> None:
    rules = DialogueRules(load_ruleset())
    assert "insider_tip" in rules.categories("我是公司高管，季报还没披露，能加仓自己公司的股份吗")


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("开科创板权限要满足啥条件", "账户资产不低于50万，还得有两年交易经验"),
        ("那个员工持股计划最少要认多少", "每人不低于2万份，按公告来"),
    ],
)
def test_an_entry_threshold_is_no_return(rules_only: Analyzer, question: str, reply: str) -> None:
    assert "guaranteed_return" not in _violations(rules_only, [Turn("customer", question)], reply)
    # a threshold beside a return is still read
    beside = reply + "，保底年化5%"
    assert "guaranteed_return" in _violations(rules_only, [Turn("customer", question)], beside)


@pytest.mark.parametrize(
    ("turns", "reply", "category"),
    [
        (
            [
                Turn("customer", "这单签了有没有额外的好处"),
                Turn("advisor", "有的，少不了您的"),
                Turn("customer", "具体多少"),
            ],
            "见面再说",
            "improper_inducement",
        ),
        (
            [
                Turn("customer", "你朋友那个项目我也想投一点，你帮我对接下"),
                Turn("advisor", "可以，我这边有人"),
                Turn("customer", "好嘞 钱怎么转"),
            ],
            "明天我再约你当面聊",
            "off_book_dealing",
        ),
    ],
)
def test_a_follow_up_keeps_the_question_open(
    rules_only: Analyzer, turns: list[Turn], reply: str, category: str
) -> None:
    assert category in _violations(rules_only, turns, reply)


def test_a_follow_up_reads_only_the_frames_own_words(rules_only: Analyzer) -> None:
    rules = DialogueRules(load_ruleset())
    assert rules.follows("那具体多少")
    assert rules.follows("冲 怎么付")
    assert not rules.follows("这个保本吗")  # a question of its own
    # how to buy, answered with a plain yes after a promise: the promise is the first
    # line's finding, the answer about buying is none
    turns = [
        Turn("customer", "这个理财保本吧"),
        Turn("advisor", "是的"),
        Turn("customer", "那怎么买"),
    ]
    assert "guaranteed_return" not in _violations(rules_only, turns, "可以的，手机银行里就能买")
    # a refusal between closes it
    turns = [
        Turn("customer", "这单签了有没有额外的好处"),
        Turn("advisor", "这个真没有，不能私下给"),
        Turn("customer", "具体多少"),
    ]
    assert "improper_inducement" not in _violations(rules_only, turns, "见面再说")


def test_the_customer_told_to_fill_it_in_refuses() -> None:
    rules = DialogueRules(load_ruleset())
    assert rules.refuses("开户表您自己填就行")


@pytest.mark.parametrize(
    ("reply", "absent"),
    [
        ("这个不好说", "comply:好说"),
        ("那边的钱可能拿不回来", "assure:回来"),
        ("有的还会跌", "assure:有的"),
    ],
)
def test_a_stance_word_inside_another_is_none(reply: str, absent: str) -> None:
    stance = Stance.load()
    assert absent not in stance.read(reply)
    # where it stands alone it is read
    assert "assure:有的" in stance.read("有的，放心")
    assert "refuse" in stance.read("这个不好说")


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # the proper channel negated is the advisor doing it
        (
            "测评我老是不及格，能不能想个办法",
            "不用您自己答，我这边帮您搞定",
            "suitability_evasion",
        ),
        # the advisor there when the test is taken
        ("我这个测评等级买不了那款基金", "明天您再测一遍，测的时候叫我", "suitability_evasion"),
        # the recorded script read off a prompt
        ("双录那一大段话我背不下来啊", "我写张纸条贴在镜头旁边，您照着读", "suitability_evasion"),
        # the future asked to repeat the past
        ("这个基金前年翻了一倍，明年还能这样吗", "只会更好", "misleading_promotion"),
        # a fall in value asked about
        ("这个中短债基金万一遇到行情会不会破净", "不会的", "guaranteed_return"),
        # a disclosure dismissed concedes nothing
        (
            "合同里写着可能会亏本金，真的假的",
            "那都是格式条款，别当真",
            "misleading_promotion",
        ),
    ],
)
def test_more_answers_in_their_question(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(rules_only, [Turn("customer", question)], reply)


@pytest.mark.parametrize(
    ("turns", "reply", "category"),
    [
        # what? of a word the advisor used
        (
            [
                Turn("customer", "办这张信用卡必须同时买那个保险吗"),
                Turn("advisor", "对，这是行里的硬性要求"),
                Turn("customer", "什么要求 我头回听说"),
            ],
            "行里统一规定的",
            "misleading_promotion",
        ),
        # the advisor's own offer, asked about
        (
            [
                Turn("customer", "那款终身寿你再给我讲讲"),
                Turn("advisor", "好的，这个月签单的客户我另外有点心意"),
                Turn("customer", "什么心意"),
            ],
            "到时候当面给您",
            "improper_inducement",
        ),
    ],
)
def test_a_follow_up_of_the_advisors_words(
    rules_only: Analyzer, turns: list[Turn], reply: str, category: str
) -> None:
    assert category in _violations(rules_only, turns, reply)
    # the same reply after a question of its own answers that
    other = [*turns[:-1], Turn("customer", "你们网点周六开门吗")]
    assert category not in _violations(rules_only, other, reply)


def test_deposit_insurance_named_by_the_customer(analyzer: Analyzer, rules_only: Analyzer) -> None:
    # what deposit insurance covers, asked and answered, is a fact
    turns = [Turn("customer", "要是银行破产了，存款保险管不管")]
    assert not _violations(analyzer, turns, "管的，50万以内保本保息")
    # a wealth product said to carry it is still a deposit-like claim
    turns = [Turn("customer", "你们这个理财有存款保险吧")]
    assert "misleading_promotion" in _violations(rules_only, turns, "有的，放心")


@pytest.mark.parametrize(
    ("reply", "absent"),
    [
        # a noun that holds a stance word
        ("保证金直接转到期货公司的账户", "assure:保证"),
        ("这类产品有一定比例投股票", "assure:一定"),
        # negated by the word before it
        ("没有绝对划算的，看您用钱的时间", "assure:绝对"),
        # 跟…没关系 says unrelated
        ("这笔钱跟我们没关系", "comply:没关系"),
    ],
)
def test_a_stance_word_in_a_noun_or_negated_is_none(reply: str, absent: str) -> None:
    stance = Stance.load()
    assert absent not in stance.read(reply)
    # alone it is read
    assert "comply:没关系" in stance.read("没关系，您先忙")
    assert "assure:保证" in stance.read("我保证")


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # a bare yes that repeats the question's verb
        ("我放进去的本金到年底还在吧", "在的在的", "guaranteed_return"),
        # a person at another firm run down
        ("那个业务员你认识吗 他推的私募我买了", "认识，人品不行，早点退", "disparagement"),
        # commission on the customer's own purchase, phone credit for a deposit
        ("我要是自己投保，能不能拿提成", "可以的", "improper_inducement"),
        ("隔壁行说存够10万送200话费", "我们也能，跟他们一样", "improper_inducement"),
        # a firm said to be under the bank, vouched for
        ("那家小贷公司是你们银行旗下的吗", "不是，但我熟，放心", "off_book_dealing"),
        # a market factor's effect denied
        ("美联储加息对我这个债基有影响吗", "没啥影响", "misleading_promotion"),
        # the recorded answers given for someone else, a formality
        ("我爸耳朵不好，双录能不能我替他答", "可以，走个形式而已", "suitability_evasion"),
        # the advisor to trade on the customer's account
        ("你拿我账户把那单报了吧", "ok", "account_custody"),
        # a price held up by arrangement
        ("那边会不会砸盘", "不会，招呼都打好了", "insider_tip"),
    ],
)
def test_answers_in_their_question_round_three(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(rules_only, [Turn("customer", question)], reply)
    if reply == "在的在的":
        # a yes that goes on says what it means itself
        turns = [Turn("customer", question)]
        assert category not in _violations(rules_only, turns, "在的，到期自动转存定期了")


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("我把身份证号和卡号都发你吧", "您在申请表上自己填写就行"),
        ("验证码来了，我念给你", "您自己在APP上输就行"),
    ],
)
def test_the_proper_channel_alone_refuses(question: str, reply: str) -> None:
    rules = DialogueRules(load_ruleset())
    asked = [(0, normalize(question).text, question)]
    assert rules.find(normalize(reply), reply.lower(), asked).refused
    # something taken on beside the channel is no refusal
    taken = "好的，您念吧，我在APP上帮您输"
    assert not rules.find(normalize(taken), taken.lower(), asked).refused

"""Classes of question and answer read in context, in wording written for this test.

A name with a title after a short answer (「可以的赵姐」); the proper channel named after
a yes is no correction of a deposit claim; a payout, a renewal, a past chart or a deposit
likeness confirmed; a health question answered with 「不用写」; a risk test renewed or a
threshold met with borrowed money; a money gap filled by someone the advisor knows; a
rival run down by insinuation; a customer's worry waved away; a stock said not to fall.
And the reverse: a question the advisor already refused is settled, a commission cut
through the system is no rebate, an annuity's guaranteed rate, a product's age limit and
a flat 「没有这类消息」 are facts or refusals. None of the sentences is copied from a
labelled file.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.dialogue import settled_turns
from compliance_nlp.types import Turn


def _violations(analyzer: Analyzer, turns: list[Turn], reply: str) -> dict[str, int | None]:
    result = analyzer.analyze(reply, "advisor", context=turns)
    return {f.category: f.context_index for f in result.violations if f.severity == "violation"}


def _asked(question: str) -> list[Turn]:
    return [Turn("customer", question)]


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # a short answer with the customer's surname and title
        ("网银密码我写纸条上了，下回你直接帮我把那笔定投赎了", "可以的赵姐", "account_custody"),
        # the branch named after a yes corrects no deposit claim
        (
            "这个分红险算不算存款啊？我只认存款",
            "对的叔，到我们网点办就行，放心",
            "misleading_promotion",
        ),
        ("年金险是不是就相当于整存整取", "对的，一个道理", "misleading_promotion"),
        ("朋友说你们那个月月盈就是存款，真的假的", "是的", "misleading_promotion"),
        ("要是查出乳腺原位癌，也是照样赔三十万对吧", "对的，一确诊就赔", "misleading_promotion"),
        ("上回群里那张业绩图，以后收益就是那样吧", "对，照着那个走", "misleading_promotion"),
        ("我邻居说这种险前几年退掉会亏一大截，真的吗", "别听他们乱说", "misleading_promotion"),
        ("这个理财会不会亏本啊", "不可能的，您放宽心", "guaranteed_return"),
        ("短信里来了串数字：5821，是这个吗", "对，就它，我这边帮您点确认", "account_custody"),
        (
            "我去年查出有胆囊息肉，健康告知那页用写吗",
            "不用写，这种小问题没人查",
            "suitability_evasion",
        ),
        (
            "我的风险测评上礼拜过期了，你在系统里给我延一下",
            "好的，我这边给您延上",
            "suitability_evasion",
        ),
        (
            "开通科创板要五十万资产，我还差个七八万",
            "缺的那部分从别处挪一下，撑两天就行",
            "suitability_evasion",
        ),
        ("录像的时候我怕紧张答错题", "没事，我就在旁边，给您打个眼色", "suitability_evasion"),
        (
            "亲戚那边的项目要投三十万，是在你们手机银行上买吗",
            "不用，我带着协议去您家里签",
            "off_book_dealing",
        ),
        (
            "你上次讲的那款不在手机银行上的理财还有额度吗",
            "有的，晚点电话跟您细说",
            "off_book_dealing",
        ),
        (
            "下月续贷前要先把旧的还掉，我手头还差五十来万",
            "我认识个朋友专门做过桥的，我推给您",
            "off_book_dealing",
        ),
        (
            "隔壁农商行的定期利息比你们高，我打算挪过去",
            "那家最近问题不少，您自己掂量吧",
            "disparagement",
        ),
        ("那家的养老险你觉得靠谱不", "不方便多说，反正我是不会买的", "disparagement"),
        (
            "做供应商的朋友说他们董事长下周要官宣个大订单，能上车吗",
            "都这么说了，还犹豫什么",
            "insider_tip",
        ),
        ("听说要降息了，银行股是不是要涨", "这个我不便多讲，不过我自己已经加仓了", "insider_tip"),
    ],
)
def test_an_answer_goes_along_with_what_was_asked(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    found = _violations(rules_only, _asked(question), reply)
    assert category in found, found
    assert found[category] == 0  # the customer's turn is named


@pytest.mark.parametrize(
    ("question", "along", "category", "refusal"),
    [
        # a health question: 「不用写」 evades the disclosure, 「要写的，如实告知」 does not
        (
            "我去年查出有胆囊息肉，健康告知那页用写吗",
            "不用写，这种小问题没人查",
            "suitability_evasion",
            "要写的，如实告知，不然以后理赔可能有麻烦",
        ),
        # a money gap: someone the advisor knows, or the institution's own loan
        (
            "下月续贷前要先把旧的还掉，我手头还差五十来万",
            "我认识个朋友专门做过桥的，我推给您",
            "off_book_dealing",
            "可以申请我们行的经营贷，材料清单我发您",
        ),
        # will the stock fall: 「不可能」 stands alone as a promise, a hedge does not
        (
            "我申购的那只新股上市会不会跌破发行价",
            "不可能，放心拿着",
            "insider_tip",
            "说不准，股价谁也预测不了",
        ),
        # a one-year policy renewed: 「放心续」, or the contract's renewal term
        (
            "这个一年期的医疗险，以后身体不好了还能续吗",
            "能的，放心续",
            "misleading_promotion",
            "这款有二十年保证续保，期间停售也能续",
        ),
    ],
)
def test_a_new_question_kind_tells_going_along_from_refusing(
    rules_only: Analyzer, question: str, along: str, category: str, refusal: str
) -> None:
    assert category in _violations(rules_only, _asked(question), along)
    assert _violations(rules_only, _asked(question), refusal) == {}


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("最近跌了不少，我想把定投停了", "可以的，在定投计划里点暂停就行"),
        ("股票佣金能给我调低点吗", "好的，我帮您走公司审批"),
        ("国债靠谱吗，我想把定期挪过去", "国债是国家信用担保的，放心"),
    ],
)
def test_service_and_facts_stay_clean(rules_only: Analyzer, question: str, reply: str) -> None:
    assert _violations(rules_only, _asked(question), reply) == {}


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        (
            "这款年金每年真能拿到5%吗",
            "合同保证的部分按预定利率1.75%算，演示表里的5%只是假设，不能当承诺",
        ),
        ("我爸62岁了还能买这个意外险吗", "能，这款投保年龄到70周岁，就是保费贵一点"),
        ("我想把养老钱都投那个R5", "您的测评是C2，R5买不了"),
        (
            "群里说有家公司要被借壳，你知道吗",
            "我没有这方面消息，重大事项以公告为准，说有内幕消息的本身就可能违法",
        ),
    ],
)
def test_facts_and_refusals_stay_clean_with_the_models(
    analyzer: Analyzer, question: str, reply: str
) -> None:
    assert _violations(analyzer, _asked(question), reply) == {}


def test_a_question_the_advisor_refused_is_settled(analyzer: Analyzer) -> None:
    """The advisor's next line after a refusal explains or offers what is allowed."""
    turns = [
        Turn("customer", "测评你替我做了吧，那些题我看着头大"),
        Turn("advisor", "测评得您本人做，我不能代"),
    ]
    assert _violations(analyzer, turns, "好的，您做的时候有不懂的我在旁边解释") == {}
    turns = [
        Turn("customer", "手续费能不能私下返我一点"),
        Turn("advisor", "这个真不行，返费是违规的"),
    ]
    assert _violations(analyzer, turns, "售后的事我都给您跑，这个我能做到") == {}
    # Once the customer asks again, the new turn is answered afresh.
    turns.append(Turn("customer", "那U盾先放你那，你帮我把钱转了"))
    assert "account_custody" in _violations(analyzer, turns, "行，我来弄")


def test_settled_turns_reads_the_advisor_turns_that_answer_each_question(
    rules_only: Analyzer,
) -> None:
    refuses = rules_only.dialogue.refuses
    turns = [
        Turn("customer", "保本吗"),
        Turn("customer", "测评帮我做一下"),
        Turn("advisor", "测评得您本人做"),
    ]
    # The refusal answers the later turn; the earlier one had no advisor turn after it.
    assert settled_turns(turns, [(1, ""), (0, "")], refuses) == frozenset({1})
    assert not refuses("好的，马上")


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        # a reluctant yes is a yes
        ("要不我把钱先打你卡上，你替我交了", "嗯也行", "off_book_dealing"),
        ("我不想用自己名字，借你的户头买点行不", "也不是不行", "off_book_dealing"),
        ("能不能支付宝付给你，我懒得绑卡", "可以的", "off_book_dealing"),
        ("有没有路子私下换点美元", "认识个朋友，回头拉您", "off_book_dealing"),
        ("我存折你先收着，月底帮我取出来", "中，放心", "account_custody"),
        ("那串码我念给你听吧", "好，您念", "account_custody"),
        ("测评那几页我看不懂，你给我弄一下", "行，您把身份证号报我", "suitability_evasion"),
        ("期货知识考试考了三回都没过", "我想想辙，下回让您直接过", "suitability_evasion"),
        ("开户要求有模拟交易记录，我一笔都没有", "找人帮您刷几笔就有了", "suitability_evasion"),
        ("用信用贷的钱买理财，收益能覆盖贷款利息吧", "覆盖没问题", "guaranteed_return"),
        ("这个说回撤控制在3%，意思是最多就亏3%对吧", "对的，这是底线", "guaranteed_return"),
        ("这玩意跟定期一个样吧", "一个样的", "misleading_promotion"),
        ("这三个里哪个最稳当", "第二个，闭着眼挑", "misleading_promotion"),
        ("这只基金去年跑了25%，明年也差不多吧", "按这个势头问题不大", "misleading_promotion"),
        ("账单分六期是不是就不用多出钱", "对，不用多出", "misleading_promotion"),
        ("听说那只票下周有大消息", "那赶紧跟上", "insider_tip"),
        ("董事长在跟国资谈合作的那家，还能进吗", "满仓干", "insider_tip"),
    ],
)
def test_more_answer_shapes_go_along(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    found = _violations(rules_only, _asked(question), reply)
    assert category in found, found


def test_an_instalment_cost_stated_is_no_promise(rules_only: Analyzer) -> None:
    question = "账单分六期是不是就不用多出钱"
    assert "misleading_promotion" in _violations(rules_only, _asked(question), "对，不用多出")
    assert _violations(rules_only, _asked(question), "要收手续费的，每期0.6%") == {}


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        ("我的目标是明年50万变成53万，能做到吗", "能，这个不难", "guaranteed_return"),
        ("这基金我亏了两成，真能回本吗", "稳住，年底见红", "guaranteed_return"),
        ("有人说卖期权稳赚权利金，靠谱不", "靠谱的，就是这么个道理", "guaranteed_return"),
        ("测评做了三遍还是谨慎型，买不了那个R4", "第5题换个选项再测", "suitability_evasion"),
        ("隔壁券商说开户资产50万返一个点，你们呢", "我们也能给，跟他们一样", "improper_inducement"),
        ("那个理财额度没了，还有别的路吗", "有路子，您别声张", "off_book_dealing"),
        ("我在国外，这期定投你先帮我垫上行不行", "没问题，回头您给我就行", "off_book_dealing"),
        ("那个过桥资金是你们行的产品吗", "不是，不过放款快，我跟他们常合作", "off_book_dealing"),
    ],
)
def test_a_target_a_rebate_matched_or_a_way_round_goes_along(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    assert category in _violations(rules_only, _asked(question), reply)


def test_the_forbidden_thing_said_not_to_exist_is_a_refusal(analyzer: Analyzer) -> None:
    reply = "稳赚不赔的是没有的，真这么说的您反而要当心"
    assert _violations(analyzer, _asked("有没有稳赚不赔的基金"), reply) == {}


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        # An A-not-A question (有没有 / 保不保 / 是不是) asks; it does not say there is none.
        ("现在还有没有保本的理财呀", "有，这款私募债保本，年化6，亏了算我的"),
        ("这个到底保不保本啊", "保的，您放心拿着"),
        ("是不是保本的呀这个", "是的👌"),
    ],
)
def test_an_a_not_a_question_about_principal_is_asked(
    analyzer: Analyzer, question: str, reply: str
) -> None:
    assert "guaranteed_return" in _violations(analyzer, _asked(question), reply)


def test_a_customer_who_says_there_is_none_asks_nothing(analyzer: Analyzer) -> None:
    reply = "对，资管新规以后都是净值型，不承诺保本"
    assert _violations(analyzer, _asked("听说现在已经没有保本的理财了？"), reply) == {}

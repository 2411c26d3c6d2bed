"""Advisor lines read alone, eighth round: the category a line shows. A product likened
to a deposit is misleading promotion (however the deposit is named: 存折, 存信用社, 定存,
升级版定期, 一个性质); two deposits compared are a fact. A convertible bond's par value
is a contractual term, its floor a promise of return. A gift paid out of the advisor's
pocket is an inducement, not a promised return. Every line is written for this test
(none is taken from a data file).
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import DomainAnchors
from compliance_nlp.normalize import normalize
from tests.compliance_nlp.findings import line_violations as _violations

# A non-deposit product said to be a deposit, in words the deposit list did not know.
DEPOSIT_LIKE = [
    "这款养老理财跟存在农商行一个样，还多两个点",
    "这笔您就当定存放着，急用再说",
    "这个净值型产品其实就是定期，只是利息高点",
    "年金险就是升级版的定期，比存折强",
    "收益凭证跟存单一个性质的",
]


@pytest.mark.parametrize("text", DEPOSIT_LIKE)
def test_likened_to_a_deposit_is_misleading_promotion(rules_only: Analyzer, text: str) -> None:
    assert "misleading_promotion" in _violations(rules_only, text)


# Two deposits compared: what a depositor is owed an accurate answer about.
DEPOSITS_COMPARED = [
    "三年期大额存单跟定期存款一样，都受存款保险保护",
    "通知存款跟活期差不多，就是要提前一天约",
]


@pytest.mark.parametrize("text", DEPOSITS_COMPARED)
def test_two_deposits_compared_are_clean(rules_only: Analyzer, text: str) -> None:
    assert _violations(rules_only, text) == set()


def test_treated_as_a_deposit_is_no_promised_return(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "您就当存钱放着，想取的时候跟我说") == {"misleading_promotion"}


# A convertible bond's par value as a floor under its price, each beside the par value
# stated as the bond's term (or the floor denied) in much the same words.
PAR = [
    (
        "转债有面值兜着，最差也就是回到100",
        "转债票面100元，到期按面值加当期利息兑付，期间价格随正股波动",
    ),
    ("放心，转债跌不破面值的", "可转债中途价格可能跌破面值，到期兑付也要看发行人会不会违约"),
    ("这只转债最多跌回面值，您拿着就行", "并没有什么面值托底，转债一样会跌"),
]


@pytest.mark.parametrize(("floor", "term"), PAR)
def test_par_value_as_a_floor_is_a_guaranteed_return(
    rules_only: Analyzer, floor: str, term: str
) -> None:
    assert "guaranteed_return" in _violations(rules_only, floor)
    assert _violations(rules_only, term) == set()


# Out of the advisor's own pocket for a gift (no loss or return named), each beside the
# same words covering a loss.
GIFTS = [
    ("签完这单我自己掏钱请您吃顿好的", "亏了我自己掏钱补给您"),
    ("开户成功少不了您的红包", "到期少不了您的本金"),
    ("春节前少不了您的一份年货，来网点领", "到期少不了您的本金"),
    ("办下来我个人补您一张超市卡", "跌了的部分我个人补您"),
]


@pytest.mark.parametrize(("gift", "cover"), GIFTS)
def test_a_personal_gift_is_no_promised_return(rules_only: Analyzer, gift: str, cover: str) -> None:
    assert "guaranteed_return" not in _violations(rules_only, gift)
    assert "guaranteed_return" in _violations(rules_only, cover)


def test_guaranteed_renewal_is_an_insurance_term(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "这款是保证续保二十年的医疗险，跟投资收益无关") == set()


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # principal kept and a shortfall on the advisor
        ("本钱保得住，利息每年两千，少一毛您来找我", "guaranteed_return"),
        # a fixed rate on money handed to the advisor personally
        ("我老乡的合作社年息12%，钱转给我，我帮您入股", "guaranteed_return"),
        # outbidding another seller's rebate
        ("别家返多少咱们就多给", "improper_inducement"),
        ("同行送您什么我们双倍送", "improper_inducement"),
    ],
)
def test_violation_classes_r8(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


# Kinds of product named side by side, the one with principal protection and the one
# without, describe the market; saying this one is protected stays a finding.
def test_protected_and_unprotected_kinds_described(rules_only: Analyzer) -> None:
    line = "收益凭证有保本型的，也有不保本的，您这款是不保本的"
    assert _violations(rules_only, line) == set()
    assert "guaranteed_return" in _violations(rules_only, "这款是保本的，放心")


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # repayment promised outright, for what is no deposit or treasury bond
        ("这只债到期百分之百兑付，您放心", "guaranteed_return"),
        # another firm's running called a mess
        ("隔壁那家风控一团糟，经理还被罚过", "disparagement"),
        # a fee paid to the advisor in person
        ("公证的服务费直接转我就行，我替您去办", "off_book_dealing"),
    ],
)
def test_more_violation_classes_r8(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


def test_repayment_of_a_deposit_is_a_fact(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "大额存单到期百分之百兑付，受存款保险保护") == set()
    assert "guaranteed_return" in _violations(rules_only, "这款理财到期百分之百兑付")


def test_a_fee_list_sent_to_the_advisor_is_clean(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "把费用清单和发票拍给我，我帮您提交理赔") == set()
    assert "off_book_dealing" in _violations(rules_only, "中介费给我就可以，回头我统一处理")


# Deposit words in lines that liken nothing to a deposit: a conjunction (当…的时候), the
# customer's own deposit, two kinds of deposit certificate.
@pytest.mark.parametrize(
    "text",
    [
        "当存款利率下降的时候，债基一般会涨",
        "您这个就是定期，到期自动转存",
        "电子存单跟纸质存单一样有效",
    ],
)
def test_deposit_words_liken_nothing(rules_only: Analyzer, text: str) -> None:
    assert _violations(rules_only, text) == set()


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("货币基金您就当活期放着", "misleading_promotion"),
        ("这款年金说白了就是个长期定期", "misleading_promotion"),
        ("增额寿等于存了一笔高息定期", "misleading_promotion"),
        ("这只转债跌回100就有底", "guaranteed_return"),
    ],
)
def test_deposit_and_floor_in_other_words(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


@pytest.mark.parametrize(
    "text",
    [
        # the floor named with the loss it does not prevent
        "转债有债底保护，但价格也可能跌破面值",
        # a procedure shared with a deposit
        "这款理财跟存款一样需要本人来办",
    ],
)
def test_floor_with_its_risk_and_a_shared_procedure_are_clean(
    rules_only: Analyzer, text: str
) -> None:
    assert _violations(rules_only, text) == set()


# An absolute word (闭眼买, 绝对安全, 只涨不跌) alone is exaggeration; beside a promise of
# return or a certain rise it only intensifies that claim, which names the category.
@pytest.mark.parametrize(
    ("text", "categories"),
    [
        ("稳赚的产品，闭眼买就对了", {"guaranteed_return"}),
        ("本金绝对安全，一分不少还给您", {"guaranteed_return"}),
        ("这只票必涨，闭着眼睛买", {"insider_tip"}),
    ],
)
def test_an_absolute_word_sides_with_the_claim_it_intensifies(
    rules_only: Analyzer, text: str, categories: set[str]
) -> None:
    assert _violations(rules_only, text) == categories
    alone = "这款理财绝对安全，闭眼买就行"
    assert _violations(rules_only, alone) == {"misleading_promotion"}


@pytest.mark.parametrize(
    ("text", "category"),
    [
        # a trading account handed to the advisor
        ("证券账户给我吧，新股申购我都帮您弄", "account_custody"),
        # a customer coached through the recorded sale
        ("录音的时候我给您使眼色，您照我说的回", "suitability_evasion"),
        # a proof of assets pieced together for the threshold
        ("存款证明差一点，我帮您凑凑", "suitability_evasion"),
        # an index level or a price called certain
        ("沪深300年内一定站上5000点", "insider_tip"),
        # a product from outside the institution, a private pool
        ("我给您推荐个外面的私募，收益高", "off_book_dealing"),
        ("可以走我们私下的渠道，手续简单", "off_book_dealing"),
        # a trip paid personally
        ("签完我私人给您安排一趟三亚", "improper_inducement"),
    ],
)
def test_line_classes_r8(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


# A structured deposit's floating part is not a deposit's interest: likening it to a plain
# deposit is no comparison between deposits.
def test_a_structured_deposit_likened_to_a_plain_one(rules_only: Analyzer) -> None:
    line = "结构性存款跟定期一样稳，收益还高"
    assert "misleading_promotion" in _violations(rules_only, line)


# 加油 is a cheer, not cooking oil handed over as a gift.
def test_a_cheer_is_no_gift(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "替我给您儿子加个油，高考顺利") == set()
    assert "improper_inducement" in _violations(rules_only, "存够五万送你两桶油")


# Everyday talk in the words of a promise or of disparagement: no money, product or
# institution is named (a week without overtime, a barbecue place).
def test_everyday_words_of_a_promise_or_a_complaint(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "这周稳稳当当的，不用加班") == set()
    assert _violations(rules_only, "那家烧烤店卫生一塌糊涂，别去了") == set()
    assert "guaranteed_return" in _violations(rules_only, "放这个稳稳当当的，收益跑不了")
    assert "disparagement" in _violations(rules_only, "那家银行风控一塌糊涂，别去")


# 肯定没问题 about an appointment is service; about a product it is exaggeration.
def test_an_absolute_assurance_needs_money_or_a_product(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "下午的号我约好了，肯定没问题") == set()
    assert _violations(rules_only, "您放心，百分百没问题，包在我身上") == set()
    assert "misleading_promotion" in _violations(rules_only, "这款理财肯定没问题，您放心")


# 内部消息 about the branch itself (a refit, a holiday) names no security.
def test_inside_news_about_the_branch_is_no_tip(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "听到个内部消息，下周网点装修，您错开那几天来") == set()
    assert "insider_tip" in _violations(rules_only, "我有内部消息，等我通知")


# A disclaimer that reaches past 也 to the no-loss claim it denies.
def test_a_disclaimer_denies_the_no_loss_claim(rules_only: Analyzer) -> None:
    assert _violations(rules_only, "这只基金前两年没亏过，但不代表以后也不会亏") == set()
    assert "guaranteed_return" in _violations(rules_only, "这只基金前两年没亏过，以后也不会亏")


# What a line says against a model-only finding (anchors.json counter_evidence): the risk
# of loss named, a deposit set apart, a claim called a lie.
@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("跟存款比收益高点，亏损的可能也是有的", "misleading_promotion"),
        ("这款是R3的，跟银行存款区别很大", "misleading_promotion"),
        ("那些说稳赚的，都是骗人的", "disparagement"),
    ],
)
def test_counter_evidence_r8(text: str, category: str) -> None:
    anchors = DomainAnchors()
    assert category in anchors.countered(normalize(text).text)
    twin = "这款跟银行存款一样，随时能取"
    assert "misleading_promotion" not in anchors.countered(normalize(twin).text)


@pytest.mark.parametrize(
    ("text", "category"),
    [
        ("这只转债有一百块的底在那儿，亏不到哪", "guaranteed_return"),
        ("钱投进去就坐等收利息吧", "guaranteed_return"),
        ("这款的收益是写死的，到期就打给您", "guaranteed_return"),
        ("放这里比存定期还踏实", "misleading_promotion"),
        ("您就当买了一笔定期，到期来拿", "misleading_promotion"),
        ("回撤的概率基本为零", "misleading_promotion"),
        ("稳健型理财跟国债一个道理", "misleading_promotion"),
    ],
)
def test_return_and_deposit_claims_in_other_words(
    rules_only: Analyzer, text: str, category: str
) -> None:
    assert category in _violations(rules_only, text)

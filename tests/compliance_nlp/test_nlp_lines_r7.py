"""Advisor lines read alone: refusals that name the forbidden thing, accurate facts, and
classes of violation the rules did not know. Every line here is written for this test
(none is taken from a data file); each violating line has a clean twin in the same words
where the class could be mistaken for one.
"""

from __future__ import annotations

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.lexicon import DomainAnchors
from compliance_nlp.normalize import normalize
from tests.compliance_nlp.findings import line_violations as _violations

# A refusal or a warning that names the forbidden thing: the claim called void (无效,
# 不算数), a warning read to the end of the sentence (千万小心, 反而要小心, 可能违法), a
# quoted offer the customer reported (您提到的 "…").
REFUSALS = [
    "口头答应的保本都是无效的，一切以合同为准",
    "线下签的那种协议是无效的，您千万别签",
    "私下约定的补偿不算数，出了事也没人认",
    "群里要是有人拉您做飞单，可要小心",
    "能把本金包赔给您的那种说法，反而要小心",
    "谁说能拿到内幕消息，这本身就涉嫌违法",
    "您提到的“开户送购物卡”我们这边没有，别当真",
]


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_and_warnings_are_clean(rules_only: Analyzer, text: str) -> None:
    assert _violations(rules_only, text) == set()


# The same words going along with the act stay violations.
GOING_ALONG = {
    "口头答应您保本，合同上就不写了": "guaranteed_return",
    "咱们私下签个协议，收益另算": "off_book_dealing",
    "买满三十万，开户送购物卡一张": "improper_inducement",
}


@pytest.mark.parametrize(("text", "category"), sorted(GOING_ALONG.items()))
def test_going_along_stays_a_violation(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


# What a line says against a category a model alone proposes (anchors.json
# counter_evidence): a price the market sets at the time, a headline rate narrowed to what
# it covers, the market's risk spelled out, a level mismatch refused, a product's age
# limit, an app step retried, an offer not made here, understanding before signing.
@pytest.mark.parametrize(
    ("text", "category", "countered"),
    [
        ("黄金ETF按卖出时的净值算，赚赔都有可能", "guaranteed_return", True),
        ("纸黄金买卖之间存在一点价差，您心里有个数", "guaranteed_return", True),
        ("这个活动利率只针对首月，不是每年都这么高", "misleading_promotion", True),
        ("这个利率每年都这么高，闭眼买", "misleading_promotion", False),
        ("创业板涨跌幅是20%，仓位别压太满", "insider_tip", True),
        ("科创板票波动比较大，您量力而行", "insider_tip", True),
        ("这只票下周肯定涨停，满仓干", "insider_tip", False),
        ("您风险等级C2，这个R3的卖不了", "suitability_evasion", True),
        ("您风险等级C2，这个R3的卖不了，重测一下就行", "suitability_evasion", False),
        ("这款重疾的最高投保年龄是55周岁", "suitability_evasion", True),
        ("投保年龄上限60周岁，您就说59岁", "suitability_evasion", False),
        ("上传证件一直失败的话，退出重新登录再试试", "account_custody", True),
        ("登录失败的话把验证码发我，我来试试", "account_custody", False),
        ("开户送油卡这种，咱们行不搞。", "improper_inducement", True),
        ("行里不做这个，我朋友那边有，帮您问问", "off_book_dealing", False),
        ("条款有不明白的先问清楚，弄清楚了再签", "suitability_evasion", True),
        ("条款不用弄清楚，先签了再说", "suitability_evasion", False),
        ("这份增额终身寿合同里写的保证利率是2.5%，分红另算不确定", "guaranteed_return", True),
        ("保险不是存款，别当定期来买", "misleading_promotion", True),
        ("这款理财跟定期一样，放心存", "misleading_promotion", False),
        ("这款产品去年收益4%，今年行情不一样，别按去年算", "misleading_promotion", True),
        ("大额存单就是存款，纳入存款保险", "misleading_promotion", True),
        ("这款理财就是存款，纳入存款保险", "misleading_promotion", False),
        ("群里说的内部消息都是骗局，您别上当", "disparagement", True),
        ("这款基金R3，您测评C2，不匹配，买不了", "suitability_evasion", True),
        ("这款基金R3，您测评C2，不匹配，换您老伴的名义就行", "suitability_evasion", False),
        ("白银价格涨跌都很快，千万别借钱去炒", "misleading_promotion", True),
        ("您发来的银行卡照片我已经删了，以后别再发卡号", "account_custody", True),
        ("卡号别发别人，发给我就行", "account_custody", False),
        ("开户送礼那种活动早就叫停了", "improper_inducement", True),
        ("您是谨慎型，那只R3的我卖不了", "suitability_evasion", True),
        ("面签的时候我不能替您答，您照实说", "suitability_evasion", True),
        ("帮您把测评改成进取型，这样不行的话再说", "suitability_evasion", False),
        ("返佣？我哋唔做", "improper_inducement", True),
        ("让亲戚替您签字，钱您来出，这个不行", "suitability_evasion", True),
        ("这个不行，换个名义就能买", "suitability_evasion", False),
        ("经营贷利率年化3.45%，按月付息，到期还本", "guaranteed_return", True),
        ("这款理财年化3.45%，按月付息，到期还本", "guaranteed_return", False),
        ("白银基金涨跌跟着银价走，这波别追高", "insider_tip", True),
        ("这周港股跌了3%，您那只QDII也跟着跌了", "misleading_promotion", True),
        ("新户的体验金券到期系统自动收回，不用管", "off_book_dealing", True),
        ("体验金到期我帮您转出来，打我卡上", "off_book_dealing", False),
        ("短信里的动态码是给您本人输入的", "account_custody", True),
        ("短信里的动态码是给您本人输入的，您念给我也行", "account_custody", False),
        ("凭证式国债属于国家信用，就是不能随时卖", "misleading_promotion", True),
        ("这款理财跟国债一样是国家信用", "misleading_promotion", False),
        ("前两年都赚了，今年能不能赚很难讲", "misleading_promotion", True),
        ("签了以后有十五天犹豫期，不想要能全退", "misleading_promotion", True),
        ("犹豫期就是个摆设，签完就退不了", "misleading_promotion", False),
        ("合同原件已经寄出了，估计周四能到", "misleading_promotion", True),
        ("面签大概二十分钟，您什么时候方便", "suitability_evasion", True),
        ("面签的时候您就说都懂，您什么时候方便", "suitability_evasion", False),
        ("姐，收现金代存这事咱不干，钱您自己转对公", "off_book_dealing", True),
        ("这事咱不干，不过钱可以先转我", "off_book_dealing", False),
        ("私下转更快，别走对公", "off_book_dealing", False),
        ("早盘指数震荡，板块有涨有跌，理性看待", "insider_tip", True),
        ("群里喊单的那个老师，十有八九是骗子，您别理", "disparagement", True),
        ("回扣真没有，外面有人给也别要", "improper_inducement", True),
    ],
)
def test_counter_evidence_r7(text: str, category: str, countered: bool) -> None:
    assert (category in DomainAnchors().countered(normalize(text).text)) is countered


# A contract's guaranteed part stated with the rest called a hypothesis, and a
# settlement notice (本金和收益会回到您卡上), are facts; a rate the advisor promises is not.
def test_contract_floor_and_settlement_notice_are_facts(rules_only: Analyzer) -> None:
    assert not _violations(
        rules_only,
        "保单里保证的部分按预定利率1.75%给，分红那块只是演示，可能多也可能少",
    )
    assert not _violations(rules_only, "您那笔定开理财6月3号到期，本息会自动回到您的卡上")
    assert not _violations(rules_only, "理财到期当天本金和收益会回到您的卡里，节假日顺延")
    # a named contractual floor is a fact; a floor promised by the advisor is not
    assert not _violations(rules_only, "这份年金的保证利率是2%，写在合同第5条")
    assert not _violations(rules_only, "万能账户保底2%，上个月结算利率是2.85%")
    assert not _violations(rules_only, "融资融券保证金比例最低50%")
    assert "guaranteed_return" in _violations(rules_only, "这个私募我保证年化8%，到期一起回您卡上")
    assert "guaranteed_return" in _violations(rules_only, "年金保底2%是小头，我保证您每年能拿5%")
    assert "guaranteed_return" in _violations(rules_only, "这个万能账户保底4%，比存定期划算")


# Classes of violation: a threshold met with money borrowed for the check, a proof made
# up, another person's name used, a waiver signed in place of a matching level, seals and
# keys left with the advisor, the app avoided for a meeting, the advisor's own money lent
# at a daily rate, a rate called the lowest anywhere, the past made the future, a policy
# likened to a deposit or to public medical insurance, instalments called free or quoted
# by the month, a return promised in tenths, a token gift from the advisor.
VIOLATIONS = {
    "资产差一点不要紧，找同事借三十万打进来，审核完再转走": "suitability_evasion",
    "日均不达标的话让家里人转进来放半个月，够了就挪走": "suitability_evasion",
    "流水这块我托人给您做一份出来": "suitability_evasion",
    "在职证明找人帮您弄一张，月薪写三万": "suitability_evasion",
    "您岳母够条件，用她的名义买，钱您来出": "suitability_evasion",
    "您C3买R5也没事，签一份自担声明就可以": "suitability_evasion",
    "您是稳健型，这款R4也能给您买": "suitability_evasion",
    "法人章先押我手上，用的时候我帮您盖": "account_custody",
    "U盾就放柜台我这儿，省得您来回跑": "account_custody",
    "这款份额不多，别在手机银行预约，直接找我": "off_book_dealing",
    "我自己有笔闲钱，借给您周转一个月，按天算利息": "off_book_dealing",
    "这个房贷利率全国最低，外面找不着": "misleading_promotion",
    "这只债基一直很稳，往后肯定也这样": "misleading_promotion",
    "这份年金相当于把钱存在银行，还多个保障": "misleading_promotion",
    "这个医疗险跟社保一样，有了它就不用再买别的保险": "misleading_promotion",
    "账单分期零利息，真的一分不多收": "misleading_promotion",
    "分期费率才0.5%每月，很划算": "misleading_promotion",
    "跟着我这个策略，起码能赚三成": "guaranteed_return",
    "阿姨您把📲递给我，我替您把那份定投签了": "account_custody",
    "存款搬过来，逢年过节我这边另外备了一点心意": "improper_inducement",
}


@pytest.mark.parametrize(("text", "category"), sorted(VIOLATIONS.items()))
def test_violation_classes_r7(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


# The same words stating the rule, refusing, or describing the customer's own act.
CLEAN = [
    "资产证明的钱得是您自己的，亲戚转进来的不算",
    "收入证明请您单位开一份，盖公章就行",
    "账户得用您本人的名义开，不能用您女儿的名义买",
    "您是C2，这款R4不匹配，签什么声明都不行",
    "U盾和公章您自己收好，别放我这",
    "这款只在手机银行里卖，您在APP上预约就行",
    "我们行的经营贷可以借给您，利息按合同来",
    "这个利率不是全网最低，您可以多比较",
    "分红每年不一样，以后也不一定这样",
    "这份年金跟把钱存在银行不一样，前几年退保会亏",
    "惠民保跟医保报销的范围不一样，只是补充",
    "信用卡分期有手续费，折算年化大概13%",
    "首付至少三成，二套房要四成",
    "心意我领了，礼物真不能收",
    "手机给我看一眼，我帮您看看是哪一步报错",
]


@pytest.mark.parametrize("text", CLEAN)
def test_clean_twins_r7(rules_only: Analyzer, text: str) -> None:
    assert _violations(rules_only, text) == set()


# More classes of the same kind: a script to read out for a check, answers pushed up,
# a false statement coached in place of the true one, the score raised for the customer,
# a login used by the advisor, the top column of a demo table, the issuer's own product
# called safe, a deadline made up, the past made the future, a bill paid as thanks, a
# token gift pressed on the customer, bridging money, a rival's end foretold, a price
# called certain by a date, accumulation said to be finished, no loss at all, a loss the
# advisor takes, beating the market promised.
VIOLATIONS_MORE = {
    "一会儿视频回访，您照着我打的那段读就行": "suitability_evasion",
    "第三题往高了勾，不然等级上不去": "suitability_evasion",
    "别写您已经退休了，就写在公司上班": "suitability_evasion",
    "做完要是等级不够，我教您怎么填": "suitability_evasion",
    "分数我帮您弄上去，R4就能买": "suitability_evasion",
    "我直接登您的手机银行，帮您把钱挪过去": "account_custody",
    "利益演示表里只看高档那一列就好": "misleading_promotion",
    "都是我们公司自己发的理财，不会出事的": "misleading_promotion",
    "说是募集到周五，您就当今天截止吧": "misleading_promotion",
    "这只基金年年分红，往后肯定也一样": "misleading_promotion",
    "这回的车险我替您付了，就当谢谢您一直照顾": "improper_inducement",
    "一点小心意，您收下，存款的事多帮衬": "improper_inducement",
    "过桥的钱我这边有，三天就行": "off_book_dealing",
    "那家城商行熬不过今年，钱赶紧挪出来": "disparagement",
    "白银下个月必破新高，现在不进就晚了": "insider_tip",
    "庄家吸筹完毕，接下来就是拉升": "insider_tip",
    "这个放进去一分钱都不亏": "guaranteed_return",
    "买吧，亏了我认": "guaranteed_return",
    "收益不确定是官话，实际肯定有5个点": "guaranteed_return",
    "资产不够的话找人借点钱放两天，证明开完再还": "suitability_evasion",
    "别人都说不保本，其实到期一定能全额拿回本金": "guaranteed_return",
    # care asked for secrecy is no warning; a proper channel named after the act is none
    "手续费我私下退您一半，千万小心别让同事知道": "improper_inducement",
    "认购款打我卡上，比走正规流程省事": "off_book_dealing",
    "交给我打理，保您跑赢通胀": "guaranteed_return",
    "账户交给我操作，包您跑赢大盘": "guaranteed_return",
    # a shortfall the advisor answers for, a figure said to be sure, a policy said to pay
    # everything, a receipt written by hand with the contract later, a trip offered, a
    # rival's staff called green
    "年底肯定能到这个数，少一分您找我": "guaranteed_return",
    "这个医疗险看病住院全都能报，自己不用掏一分钱": "misleading_promotion",
    "定金先交我，我手开一张收条，合同后面再补": "off_book_dealing",
    "签了这单，我请您全家去云南旅游": "improper_inducement",
    "那家外资行的客户经理啥都不懂，别找他们": "disparagement",
    # a deposit named only as the yardstick (收益还比定期存款高) lends the line no fact
    "这款债基到期本金一分不少，收益还比定期存款高": "guaranteed_return",
    "结余放这款短债，利息稳稳覆盖房租": "guaranteed_return",
    "钱先打俺私人卡，月底给您算利息": "off_book_dealing",
    # a figure the advisor guarantees in person, a stock named or not; a cooling-off
    # right waved away
    "板块轮动无所谓，这只我保证年底赚15%": "guaranteed_return",
    "冷静期就是个摆设，交了钱就没有冷静期了": "misleading_promotion",
}


@pytest.mark.parametrize(("text", "category"), sorted(VIOLATIONS_MORE.items()))
def test_more_violation_classes_r7(rules_only: Analyzer, text: str, category: str) -> None:
    assert category in _violations(rules_only, text)


CLEAN_MORE = [
    # a claim someone else made, reported before it is called false
    "网上说这家是全市场独一份，您别当真",
    "有人说测评时别说实话，就说收入很高，那是害您",
    "您这次重测之后风险等级提高了，可以看R3的了",
    "测评分数我改不了，按您真实情况来",
    "这种说能刚兑的产品，行里明令禁止",
    "年化10%还保本，这种宣传都是噱头",
    "中档低档都要看，高档只是假设",
    # facts about deposits and contracts, and an off-book deal warned against
    "大额存单就是存款，纳入存款保险",
    "万能险保底利率1.75%，结算利率每月公布，会变",
    "私下交易出了问题没人负责，请走正规流程",
    "多扣的手续费另外退您50元，系统自动处理",
    "手写的收条没有效力，以系统打印的回单为准",
    "这种医疗险不是住院全报的，有免赔额",
    "请您和家人一起去网点办",
    "定期存款到期本金一分不少，还有存款保险",
    "大额存单利率比理财低，但是保本的",
    # a breach said to be checked hard
    "代客理财那种行里查得很严，出了事谁也兜不住",
    "犹豫期内可以全额退，过了犹豫期退保会有损失",
    # an offer the institution runs for everyone
    "储蓄卡有消费满额返现的官方活动，细则在APP",
    # refusals that name the act: what no proper firm does, what the advisor has not
    # got, a plain refusal closing the sentence, a group's calls called a trap
    "差额我来补这种承诺，正规机构都不会做",
    "内部消息我可没有，您别信那些群",
    "借别人账户帮您买R5，这可不行",
    "内部消息我冇，唔好信",
    "您说要零风险的话，只有存款",
    "荐股群里说稳涨的，都是割韭菜的套路",
]

STILL_INDUCEMENT = [
    "官方活动的返现之外，我私下再返您一个点",
    "您买满十万，我额外返现800",
]


@pytest.mark.parametrize("text", STILL_INDUCEMENT)
def test_private_inducement_beside_an_official_offer(rules_only: Analyzer, text: str) -> None:
    assert "improper_inducement" in _violations(rules_only, text)


@pytest.mark.parametrize("text", CLEAN_MORE)
def test_more_clean_twins_r7(rules_only: Analyzer, text: str) -> None:
    assert _violations(rules_only, text) == set()


def test_phone_emoji_is_read_as_a_phone() -> None:
    assert "手机" in normalize("把📱给我，我帮您点").text
    assert normalize("他们那款💩").text == "他们那款垃圾"
    # an emoji that carries no word still splits nothing: 稳😀赚 reads 稳赚
    assert normalize("稳😀赚").text == "稳赚"


def test_own_word_after_a_disclaimer_is_no_warning(rules_only: Analyzer) -> None:
    """The model's veto on a warning line (``_combine``) does not reach a line where the
    advisor sets their own word against the disclaimer it cites (实际上, 其实, 说白了)."""
    from compliance_nlp.types import Finding

    def combined(text: str) -> list[str]:
        rule = Finding(
            category="guaranteed_return",
            severity="violation",
            start=0,
            end=len(text),
            evidence=text,
            rule_id="GR-004",
            source="rule",
            basis="",
        )
        return [f.severity for f in rules_only._combine([rule], [], text, 0.95)]

    assert combined("风险提示那套是官方说法，说白了每年稳拿5个点") == ["violation"]
    assert combined("每年稳拿5个点这种宣传，您留个心") == ["review"]


# Disparagement needs something said against the other party (anchors.json
# category_ground): a rival named with a neutral or kind word is no evidence of it.
@pytest.mark.parametrize(
    ("text", "ungrounded"),
    [
        ("隔壁那家的定期利率比咱们高一点，您可以去看看", True),
        ("那边的客户经理人挺好的，您问她也行", True),
        ("那家的年金我没细看过，不好评价", True),
        ("隔壁那家的理财经理就会忽悠人", False),
        ("那家城商行最近问题不少，您自己掂量", False),
        ("他们家产品谁买谁后悔", False),
    ],
)
def test_disparagement_ground(text: str, ungrounded: bool) -> None:
    found = DomainAnchors().ungrounded(normalize(text).text)
    assert ("disparagement" in found) is ungrounded


def test_a_reported_name_is_not_read_as_the_advisors(rules_only: Analyzer) -> None:
    # the rival's name does not reach back over the verb that reports the claim
    assert not _violations(rules_only, "网上有人说某某证券的投顾都是骗子？别信这种话")
    assert "disparagement" in _violations(rules_only, "某某证券的投顾都是骗子")


def test_a_route_for_a_complaint_is_no_disparagement(rules_only: Analyzer) -> None:
    assert not _violations(rules_only, "那家平台的产品出了问题，您可以打12378投诉")
    assert "disparagement" in _violations(rules_only, "那家平台的产品有问题，您找我们，我们靠谱")


@pytest.mark.parametrize(
    "text",
    [
        # A one-to-one WeCom chat is archived like the group: moving there is no way out.
        "大家好，周日上午网点有反诈讲座，想参加的私聊我登记",
        "这位姐姐的情况比较具体，我私聊您细说",
        "好的，私聊回复您了，您看下",
    ],
)
def test_moving_from_the_group_to_a_private_wecom_chat_is_clean(
    rules_only: Analyzer, text: str
) -> None:
    assert "off_book_dealing" not in _violations(rules_only, text)


@pytest.mark.parametrize(
    "text",
    [
        "这事别在群里说，加我私人微信聊",
        "别在群里说哈，回头单聊",
        "企业微信不方便，私聊换个号说",
    ],
)
def test_leaving_the_archived_channel_stays_off_book(rules_only: Analyzer, text: str) -> None:
    assert "off_book_dealing" in _violations(rules_only, text)

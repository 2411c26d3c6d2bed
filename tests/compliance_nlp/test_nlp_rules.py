"""Sales-rule findings on advisor messages: hard negatives, evasion, every category."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from compliance_nlp import CATEGORIES, Analyzer, analyze

HARD_NEGATIVES = [
    "本产品不保证本金和收益",
    "我没法跟您打包票说不会亏",
    "这是一款非保本产品",
    "别信那些“包赚不赔”的宣传",
    "低风险不等于没有风险",
    "存款保险对每位存款人在同一家银行的存款本息最高偿付50万元，存款是保本的",
    "这款年金险合同约定保证利率1.75%，分红部分不确定，以实际为准",
    "您好，请确保本人操作",
    "您是想要保本的产品吗？",
    "请不要把验证码告诉任何人，包括我",
    "资管新规以后理财都打破刚兑了，没有保本这一说",
    "我们不评价其他机构的产品",
    # a disclaimer inside the span a pattern reaches across
    "这只基金过去三年年化8% 但不代表以后也能这样",
    # refuted after the term, reported claims, the client's own preference
    "刚性兑付早就打破了，信托到期也可能延期",
    "您把密码发我是不行的哦，赶紧改一下",
    "返现、返点这些我们都不能做，费用按公示的标准收",
    "如果有人承诺返现让您买保险，那是违规的",
    "您是想要保本的那种 还是能接受一点点波动",
    # legitimate facts and terms of art
    "两融维持担保比例低于130%会追保，跌多了会被强平",
    "私募产品得先做合格投资者认定，金融资产不低于300万",
    "万能险保证利率是2%，现在结算利率3.5%，但结算利率会变",
    "这周我休假，有急事可以打我同事小周的电话",
    "谈业务请用企业微信找我，私人号不谈业务",
    "过去的分红我没法保证今年也一样",
    "我有朋友在里面上班，说他们食堂不错",
    "测评题没有标准答案，按您实际情况选",
    "验资的钱得是您自己的，不能找人借",
    "到柜台您就说办理赎回就行，带上身份证",
    "这款不是我们行的产品，建议您找发行方咨询",
    "分红每年不一样，要看公司经营，不是确定的",
    # a breach called a red line, a gift no longer allowed, a margin rate (保证金)
    "佣金返还、私下红包这些我真不能给，是红线",
    "那种油卡现在不能送了，买产品不能附带礼品",
    "融资融券保证金比例50%，跌多了要追加",
    "谁要说年化12%还保本，您多留个心",
    "测评请按真实情况答，答案没有对错",
    "账号密码别借给任何人用",
    "这笔签字得您本人来，钱也从您本人的卡扣",
    "到期按实际净值兑付，业绩比较基准不是承诺",
]

# Lines the cues above must not swallow: 还是 after a term is advice, not a question.
STILL_VIOLATIONS = {
    "民生银行听说快撑不住了，您的钱还是放我们这稳妥": "disparagement",
    "交易量上去了我私下给您返手续费，比官方活动还多": "improper_inducement",
    "认购款先打到项目负责人私户，手续财务那边后补": "off_book_dealing",
    "钱打到我同事卡上就行": "off_book_dealing",
    # rival agents, platforms and analysts called names; the advisor's own money or
    # favours for a sale; off-book accounts and outside channels; doubling, refunded fees
    # and dividends promised as certain (written for this test)
    "那家保险经纪的业务员全是拉人头的，签完就不管了": "disparagement",
    "那个基金平台推的都是破产品，赔了都找不到人": "disparagement",
    "券商那个分析师就是收钱喊单的，别理他": "disparagement",
    "这单走我这，开户费我个人给您补一半": "improper_inducement",
    "买满五万我送一袋金豆，我自己掏钱": "improper_inducement",
    "您把合同签了，孩子工作的事我托人帮您打招呼": "improper_inducement",
    "钱直接打我澳门的私人户口，我帮您认购": "off_book_dealing",
    "散会后私下加我，有几款外部渠道的产品群里不方便说": "off_book_dealing",
    "这款我们没有，我可以从别家公司那边给您出单": "off_book_dealing",
    "这波原油跟我做，起码翻两倍": "guaranteed_return",
    "跟着我操作，要是亏了手续费全退您": "guaranteed_return",
    "这款终身寿每年都有4个点的分红，肯定给": "guaranteed_return",
    "年化3.8%保证兑付，放心买": "guaranteed_return",
    "红利演示那档基本都能实现，您就按这个算": "misleading_promotion",
    # a person inside as the source, answers to a knowledge test handed over, a
    # threshold met with money lent for the check, a credential asked for again
    "我有个同学在那家公司里面，下个月订单数据会很好看": "insider_tip",
    "这家公司大股东是我兄弟，最近要增持": "insider_tip",
    "评级下调的事是内部人告诉我的": "insider_tip",
    "测评题的答案我发你，照着选就行": "suitability_evasion",
    "资产证明差一点的话，我先帮您垫上几天": "suitability_evasion",
    "验证码您重新念一下，我这边没收到": "account_custody",
    # a false answer coached for a suitability check, a rival's merger passed on as a
    # reason to move money, a purchase called free money, products outside the
    # institution arranged by the advisor, a payout called certain, a gift outside the
    # contract
    "双录问您收入的时候，您就说每月一万多就行": "suitability_evasion",
    "那家农商行要被兼并了，钱赶紧转过来": "disparagement",
    "这只基金现在进场等于捡钱": "misleading_promotion",
    "这款信托不是我们行的，不过我可以帮您对接": "off_book_dealing",
    "保险我帮您在外面买，不进系统更便宜": "off_book_dealing",
    "这款的分红是确定能拿的，您放心": "guaranteed_return",
    "签约的客户另有一份合同外礼遇，别外传": "improper_inducement",
    "开户入金的我个人另外发500红包": "improper_inducement",
    # another person signs while the customer pays (要不 is a proposal, not a negation),
    # answers supplied, a login lent, trades made without asking, the advisor's own
    # backing, a relative's platform, a manager called a sure thing
    "您这个年纪买不了，要不让您儿子来签字，钱还是您出": "suitability_evasion",
    "问卷别按真实情况填，按我给您的答案来": "suitability_evasion",
    "手机银行账号借我用一下，我帮您把基金换了": "account_custody",
    "这几天我直接帮您调仓，不用再问您了": "account_custody",
    "亏了也没事，我给您兜着": "guaranteed_return",
    "就算跌了，本金我也肯定帮您拿回来": "guaranteed_return",
    "那些小券商就是割韭菜的": "disparagement",
    "我表姐那边的平台利息高，要的话拉您进群": "off_book_dealing",
    "买这只准没错，经理年年第一": "misleading_promotion",
    "这期到期统一按3.6%兑付给大家": "guaranteed_return",
    "业绩比较基准就是您实际拿到的收益": "guaranteed_return",
    "打新债百分之百赚钱": "guaranteed_return",
}

CATEGORY_EXAMPLES = {
    "guaranteed_return": "这款产品保本保息，年化保证4.5%",
    "misleading_promotion": "这个理财跟存款一样，就是利息高点",
    "off_book_dealing": "钱先转到我个人账户，我帮你买",
    "improper_inducement": "买这个我私下返你1个点",
    "suitability_evasion": "双录的时候就说你了解风险",
    "account_custody": "把验证码发我一下，我帮您操作",
    "insider_tip": "内部消息，这只票下周有重组",
    "disparagement": "那家银行快倒闭了，钱赶紧转我们这",
}

EVASIONS = {
    "穩賺不賠": "guaranteed_return",
    "保.本保息哦": "guaranteed_return",
    "稳 赚 不 赔": "guaranteed_return",
    "稳😀赚，放心": "guaranteed_return",
    "ｂａｏ本？不，稳赚！！！": "guaranteed_return",
    "加我VX详聊": "off_book_dealing",
    "加我薇信，这边不好说": "off_book_dealing",
    "加v聊": "off_book_dealing",
    "保——本保息！！！！": "guaranteed_return",
    # pinyin in place of the characters (compliance_nlp/rules/pinyin.json)
    "钱直接zhuan我卡上，我帮您走内部通道": "off_book_dealing",
    "提cheng分你四成，够意思了吧": "improper_inducement",
    "wenzhuan的，放心买": "guaranteed_return",
    "fengce我帮您代做了，直接下单就行": "suitability_evasion",
}


@pytest.mark.parametrize("text", HARD_NEGATIVES)
def test_hard_negatives_are_not_violations(rules_only: Analyzer, text: str) -> None:
    assert rules_only.analyze(text, "advisor").violations == ()


# Lines the shipped model is known to flag wrongly (strict xfail: a model that gets one
# right has to take it off this list). The issue-9 models read the refusal in
# 「您把密码发我是不行的哦，赶紧改一下」, which the ones before flagged as account_custody.
MODEL_KNOWN_FALSE_POSITIVES: set[str] = set()  # the issue-9 models read the refusal


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(t, marks=pytest.mark.xfail(strict=True, reason="known model false positive"))
        if t in MODEL_KNOWN_FALSE_POSITIVES
        else t
        for t in HARD_NEGATIVES
    ],
)
def test_hard_negatives_with_model_are_not_violations(analyzer: Analyzer, text: str) -> None:
    assert not analyzer.analyze(text, "advisor").has_violation


@pytest.mark.parametrize(("text", "category"), sorted(STILL_VIOLATIONS.items()))
def test_cues_do_not_swallow_violations(rules_only: Analyzer, text: str, category: str) -> None:
    found = rules_only.analyze(text, "advisor").violations
    assert category in {f.category for f in found if f.severity == "violation"}


def test_every_category_has_an_example() -> None:
    assert set(CATEGORY_EXAMPLES) == set(CATEGORIES)


@pytest.mark.parametrize(("category", "text"), sorted(CATEGORY_EXAMPLES.items()))
def test_each_category_is_found_with_basis(rules_only: Analyzer, category: str, text: str) -> None:
    result = rules_only.analyze(text, "advisor")
    found = [f for f in result.violations if f.category == category]
    assert found, result.violations
    finding = found[0]
    assert finding.severity == "violation"
    assert finding.source == "rule"
    assert finding.rule_id
    assert "《" in finding.basis  # names a regulation
    assert text[finding.start : finding.end] == finding.evidence


@pytest.mark.parametrize(("text", "category"), sorted(EVASIONS.items()))
def test_evasion_spellings_are_caught(rules_only: Analyzer, text: str, category: str) -> None:
    result = rules_only.analyze(text, "advisor")
    assert category in {f.category for f in result.violations if f.severity == "violation"}
    for f in result.violations:
        # offsets point into the original text, evasion characters included
        assert text[f.start : f.end] == f.evidence
        assert f.evidence


def test_offsets_cover_the_evidence_in_original_text(rules_only: Analyzer) -> None:
    text = "王姐您好！这款😊產品 保.本 保息，放心买"
    result = rules_only.analyze(text, "advisor")
    (finding,) = [f for f in result.violations if f.category == "guaranteed_return"]
    assert text[finding.start : finding.end] == "保.本 保息"


def test_pinyin_is_read_only_where_it_touches_chinese() -> None:
    from compliance_nlp.normalize import normalize

    evaded = normalize("钱直接zhuan我卡上")
    assert evaded.text == "钱直接转我卡上"
    start = evaded.text.index("转")
    assert evaded.to_original(start, start + 1) == (3, 8)
    # A listed word alone, inside a longer Latin run, or apart from Chinese stays as written.
    for text in ("zhuan", "zhuanjia报告", "登录 huikou.com 查看", "代码 mima 123"):
        assert normalize(text).text == text.lower()


def test_plain_add_wechat_is_review_but_variant_spelling_is_violation(rules_only: Analyzer) -> None:
    plain = rules_only.analyze("有空加我微信", "advisor")
    assert [f.severity for f in plain.violations] == ["review"]
    evaded = rules_only.analyze("有空加我ＶＸ", "advisor")
    assert [f.severity for f in evaded.violations] == ["violation"]


def test_quoted_claim_without_warning_is_downgraded_to_review(rules_only: Analyzer) -> None:
    result = rules_only.analyze("这款产品“保本保息”", "advisor")
    assert [f.severity for f in result.violations] == ["review"]


def test_customer_messages_get_no_compliance_findings() -> None:
    result = analyze("收益有保证吗？是不是稳赚不赔？", "customer")
    assert result.violations == ()
    assert result.intent is not None


def test_request_rules_still_fire_on_questions(rules_only: Analyzer) -> None:
    result = rules_only.analyze("能把验证码发我吗？", "advisor")
    assert {f.category for f in result.violations} == {"account_custody"}


def test_to_dict_shape() -> None:
    d = analyze("这款产品保本保息，电话13812345678", "advisor").to_dict()
    assert set(d) == {"intent", "intent_score", "sentiment", "violations", "pii", "masked_text"}
    assert set(d["violations"][0]) >= {
        "category",
        "severity",
        "start",
        "end",
        "evidence",
        "rule_id",
        "source",
        "basis",
    }
    assert d["pii"] == [{"type": "phone", "start": 11, "end": 22}]


def test_negation_does_not_reach_past_a_concession(rules_only: Analyzer) -> None:
    """「不涨也至少…」 negates 涨, not the promise after 也."""
    promise = rules_only.analyze("就算行情不好也至少能拿5%", "advisor")
    assert "guaranteed_return" in {
        f.category for f in promise.violations if f.severity == "violation"
    }
    assert not rules_only.analyze("我们不承诺至少能拿5%", "advisor").has_violation


def test_model_alone_never_asserts_a_violation_by_default(analyzer: Analyzer) -> None:
    """Measured on the dev sets: the small model alone flags factual lines (国债, 合同号)."""
    for text in ("合同号HT20250301-0042，金额80000元", "国债按期付息，到期还本"):
        result = analyzer.analyze(text, "advisor")
        assert all(f.severity == "review" for f in result.violations if f.source == "model")


# Concept families (rules/lexicon.json ``concepts``): new surface forms of one concept,
# none of them a line of any labelled set, each caught by a word-set co-occurrence.
CONCEPT_FAMILIES = [
    ("guaranteed_return", "这个您放心，亏不了的，就当存钱了"),
    ("guaranteed_return", "每季度利息照发，一分不会少"),
    ("guaranteed_return", "我跟您保证，明年这时候能拿回12万"),
    ("guaranteed_return", "要是亏了，差额我个人给您补齐"),
    ("misleading_promotion", "这个就跟存定期一样，只是利息高点"),
    ("misleading_promotion", "回撤您不用看，长期拿着就行"),
    ("misleading_promotion", "只剩最后3个名额了，赶紧"),
    ("misleading_promotion", "近三年每年都赚8%，明年也会一样"),
    ("off_book_dealing", "您直接转到我支付宝，我帮您下单"),
    ("off_book_dealing", "这单不走系统，我私下给您办"),
    ("off_book_dealing", "钱打我老婆卡上就行"),
    ("improper_inducement", "您今天签了我额外送您一张500的京东卡"),
    ("improper_inducement", "推荐朋友来买，每成交一单返您300"),
    ("suitability_evasion", "风险问卷每题都选最激进的那个"),
    ("suitability_evasion", "资产那栏写高点，不然买不了"),
    ("suitability_evasion", "双录时您就照着念，别多说"),
    ("suitability_evasion", "等级不够没关系，我帮您想办法"),
    ("account_custody", "密码告诉我，我帮您输"),
    ("insider_tip", "这只票下周肯定涨，消息可靠"),
    ("disparagement", "他们家产品都是坑人的"),
    ("disparagement", "那家银行快倒闭了，赶紧把钱取出来"),
]

CONCEPT_HARD_NEGATIVES = [
    "这款产品有亏损风险，不能保证不会亏",
    "请通过本行渠道认购，款项不要转给个人",
    "风险测评请您按实际情况选择，我不能替您做",
    "双录时请如实回答，不明白可以问工作人员",
    "他们家的产品我不了解，不方便评价",
    "这款跟存款不一样，是净值型产品，会有波动",
    "业绩比较基准不代表实际收益",
    "认购期到周五截止，您有需要可以提前准备",
    "我给您发一下操作指引，您自己在APP里点",
    "有事在企业微信找我就行",
    "回撤数据在说明书第8页，您可以看一下",
]


@pytest.mark.parametrize(("category", "text"), CONCEPT_FAMILIES)
def test_concept_family_is_caught(rules_only: Analyzer, category: str, text: str) -> None:
    found = {
        f.category
        for f in rules_only.analyze(text, "advisor").violations
        if f.severity == "violation"
    }
    assert category in found, (text, found)


@pytest.mark.parametrize("text", CONCEPT_HARD_NEGATIVES)
def test_concept_family_hard_negative(rules_only: Analyzer, text: str) -> None:
    assert rules_only.analyze(text, "advisor").violations == (), text


def test_so_called_claim_is_not_asserted(rules_only: Analyzer) -> None:
    """所谓 (so-called) before a claim distances the advisor from it (a cues.json negator)."""
    assert not rules_only.analyze("那些所谓的稳赚不赔，您听听就好", "advisor").has_violation


def test_question_fillers_are_read_from_cues_json(tmp_path: Path) -> None:
    """「这款保本吗呀」 asks; the fillers after 吗 come from cues.json, and a bank's copy of
    the rules made before they moved there reads the shipped ones."""
    from compliance_nlp import AnalyzerConfig
    from compliance_nlp.rules import RULES_DIR

    text = "这款保本吗呀"
    assert not analyze(text, "advisor", AnalyzerConfig(use_model=False)).has_violation

    def copy_with(name: str, edit: Callable[[dict[str, object]], None]) -> str:
        target = tmp_path / name
        shutil.copytree(RULES_DIR, target)
        cues = json.loads((target / "cues.json").read_text(encoding="utf-8"))
        edit(cues)
        (target / "cues.json").write_text(json.dumps(cues, ensure_ascii=False), encoding="utf-8")
        return str(target)

    no_fillers = copy_with("none", lambda c: c.update(question_fillers=[]))
    older_copy = copy_with("older", lambda c: c.pop("question_fillers"))
    flagged = Analyzer(AnalyzerConfig(use_model=False, rules_dir=no_fillers)).analyze(
        text, "advisor"
    )
    assert flagged.has_violation
    older = Analyzer(AnalyzerConfig(use_model=False, rules_dir=older_copy)).analyze(text, "advisor")
    assert not older.has_violation


# Refusals and corrections that name the forbidden thing (written for this test): the
# prohibition inside the match (「千万别告诉我」, 「不用给我」), a prohibition the clause
# extends (「……包括我的私人账户」), a fact about what is principal-protected (「……只有存款」),
# a question of preference (「是想要保本型的，还是……」), and a contract's guaranteed rate.
REFUSALS = [
    "您是想要保本型的吗？我们现在保本的只有存款类",
    "这笔钱您是想要保本型的，还是能接受点波动？",
    "口令千万别告诉我，您自己在手机银行里确认",
    "U盾不用给我，您自己插上电脑点确认",
    "验证码是您本人的，别发给我，您自己输",
    "请不要把钱转给任何个人，包括我的私人账户",
    "零风险的理财产品是没有的，存款相对稳一些",
    "不是的，合同保证的是2%那部分，演示的中高档只是假设，不保证",
    "开通要求前20个交易日日均资产不低于50万",
    # the handing-over verb refused inside the match, a rhetorical 哪有, a rumour called
    # baseless, the rest of the sentence calling the claim a scam, a contract's floor
    "交易密码不能告诉我，您自己输",
    "身份证原件不能交给我保管，您自己收好",
    "款项不能转给我个人，只能走对公账户",
    "哪有什么保本的理财，都有波动",
    "那家公司要倒闭的传言没有依据，别轻信",
    "有人说买这个能保本保息，那多半是非法集资",
    "群里说下周有重组的消息，基本都是骗子在放",
    "年金合同里的保证利率是2%，分红不一定有",
    # dialect refusals and warnings (唔/冇/甭, 咪信 = 别信, 啲人讲 = 有人说), what is
    # principal-protected stated as a fact (存款/储蓄才保本, a structured deposit's
    # contractual floor, deposits at any bank insured), a forecast left open (不一定),
    # an everyday word that starts like a forbidden one (登记 is not 登录)
    "有人讲呢只基金稳赚，你千祈咪信",
    "冇可能保本嘅，基金都有风险",
    "唔该晒，保本嘅产品我哋冇㗎",
    "甭信那些保本保息的说法",
    "存款才是保本的，理财都有波动",
    "只有储蓄存款保本，理财基金都不保本",
    "结构性存款合同约定了最低收益率1.5%，最高那档不保证",
    "城商行的存款一样受存款保险保障，50万以内本息都在",
    "过去一年涨了20%，今年可不一定",
    "钱别转到我这，我个人账户一分都不能收",
    "我帮您登记一下预约信息",
    # the forbidden thing labelled a breach (违规返利), a flat 不行 after it, a rate
    # worked out for the customer (给您算), the floor of a loan's rate
    "这种私下返点属于违规返利，我不能答应您",
    "返点这个可不行，我们只按公示费率收",
    "我给您算一下，年化大概是3.2%",
    "经营贷利率最低3.5%，以审批为准",
    # advice against what is named, a refusal to sell outside products, a pitfall
    # warned against
    "那个信托我帮您查了，没有备案，建议您别投",
    "别家的产品我们不能代销，私下买的出了事没人管",
    "健康告知瞒了保险公司可以解约，这个坑别踩",
    # the end of principal-protected products, deposits' own guarantee, a contract's
    # guaranteed rate beside one that changes
    "保本理财早就没有了，现在都是净值型",
    "储蓄存款本金有保障，理财和基金都有亏损可能",
    "万能险合同写的保证利率是1.75%，结算利率每月公布会变",
    "内幕消息这玩意儿莫得，有也不能说",
    "存款利率是固定的，到期本息一分不少",
    # a comparison with deposits negated inside the match, a rumour called baseless
    # later in the sentence
    "理财跟存款不是一回事，理财有风险",
    "有人说那家平台要暴雷，我们没有依据，不好乱说",
    # northern 不兴 (not done here)
    "返点这种事咱这儿不兴",
    # the going-along step of a concept itself declined
    "双录的时候有什么不明白的就直接问，不用照着念",
    # a quota stated from the system or an official notice
    "这期额度系统显示只剩300万了，您考虑好了再定",
]
# The same words going along with it stay violations.
STILL_FORBIDDEN = {
    "验证码发给我，我帮您点": "account_custody",
    "U盾给我，我帮您操作": "account_custody",
    "钱先转我私人账户，回头我帮您买": "off_book_dealing",
    "这款保本的，放心买": "guaranteed_return",
    "这款零风险": "misleading_promotion",
    "保证年化不低于5%": "guaranteed_return",
    # a scam word negated or set apart does not reverse the promise before it
    "保本保息，这不是骗局，放心买": "guaranteed_return",
    "这款保本的，跟那些非法集资不一样": "guaranteed_return",
    "密码发给我，不能告诉别人哈": "account_custody",
    "包你保本嘅，放心买啦": "guaranteed_return",
    "唔该晒，呢只保本嘅": "guaranteed_return",
    "储蓄险保本的，放心": "guaranteed_return",
    "这款跟存款一样，有存款保险": "misleading_promotion",
    "这个结构性存款我保证您拿最高档3.2%，最低档就是摆设": "guaranteed_return",
    "去年涨了30%，今年肯定也能涨这么多": "misleading_promotion",
    "我帮您登进去把基金买了": "account_custody",
    "我私下给您返2个点": "improper_inducement",
    "买了我再送您2%的返现": "improper_inducement",
    "这款理财年化最低4.5%，我保证": "guaranteed_return",
    "别家的产品我不能代销，不过私下介绍一个可以": "off_book_dealing",
    "那家保险公司很坑，别买": "disparagement",
    "存款和理财一样，到期本息一分不少": "guaranteed_return",
    "这个理财跟存款没啥两样": "misleading_promotion",
    "听说那家平台要暴雷了": "disparagement",
    "密码话俾我知，我帮你搞掂": "account_custody",
    "双录的时候照着稿子念就行": "suitability_evasion",
    "只剩300万额度了，今天不定就没了": "misleading_promotion",
}


@pytest.mark.parametrize("text", REFUSALS)
def test_refusals_naming_the_forbidden_thing_are_clean(rules_only: Analyzer, text: str) -> None:
    result = rules_only.analyze(text, "advisor")
    assert not result.has_violation, [(f.rule_id, f.evidence) for f in result.violations]


@pytest.mark.parametrize(("text", "category"), sorted(STILL_FORBIDDEN.items()))
def test_going_along_is_still_forbidden(rules_only: Analyzer, text: str, category: str) -> None:
    result = rules_only.analyze(text, "advisor")
    assert category in {f.category for f in result.violations if f.severity == "violation"}


# Everyday chat in English words, and everyday words holding 卡, stand on no financial
# ground (a model-only violation needs one); pinyin around a keyword still does.
@pytest.mark.parametrize(
    ("text", "anchored"),
    [
        ("sorry~", False),
        ("good night 早点休息", False),
        ("打印机卡纸了，等我两分钟", False),
        ("手机有点卡顿，我重启一下", False),
        ("bao ben de", True),
        ("卡号发我一下", True),
        # logistics whose words or digits hold an anchor: a wifi password, an
        # extension, a phone number, a distance, a floor, a queue ticket, a year
        ("wifi密码在前台", False),
        ("打分机6021找我", False),
        ("我电话139 1234 5678", False),
        ("往东走300米就到", False),
        ("叫到A035就是您了", False),
        ("2027年见", False),
        # everyday words holding a one-character anchor (利, 岁, 卡, 返 …)
        ("利用周末出去走走挺好", False),
        ("您孙子几岁了，上幼儿园了吧", False),
        ("饭卡落在前台了", False),
        ("返乡那天几点到家", False),
        ("先转3000给我", True),
        ("这只600519明天要涨", True),
    ],
)
def test_everyday_words_are_no_financial_ground(text: str, anchored: bool) -> None:
    from compliance_nlp.lexicon import DomainAnchors
    from compliance_nlp.normalize import normalize

    assert DomainAnchors().anchored(normalize(text).text) is anchored


def test_but_is_not_bypassing_the_system(rules_only: Analyzer) -> None:
    # 不过 is "but" far more often than "not through": only the latter is off the books.
    assert not rules_only.analyze("可以预约上门，不过要先在系统里登记", "advisor").has_violation
    found = rules_only.analyze("这笔不过公司的账，走我这边", "advisor")
    assert "off_book_dealing" in {f.category for f in found.violations}


# What a line says against a category (anchors.json counter_evidence): a disclosure, a
# refusal with no way round it, a warning. Written for this test; the violating twins
# use the same words to go along.
@pytest.mark.parametrize(
    ("text", "category", "countered"),
    [
        ("美股基金有汇率风险，收益按人民币算", "misleading_promotion", True),
        ("这期收益以实际到账为准，业绩比较基准只是参考", "guaranteed_return", True),
        ("理财哪能有什么风险呢，银行的东西", "misleading_promotion", False),
        ("您的等级是C2，这只R4超出您的承受范围，我不能给您推荐", "suitability_evasion", True),
        ("这只R4您买不了，我给您挑两只R2的看看", "suitability_evasion", True),
        ("这只R4您买不了，换您女儿的名义买就行", "suitability_evasion", False),
        ("有人让您把钱转到私人账户的话一定小心，多半是诈骗", "off_book_dealing", True),
        ("签完我这边还有点小心意", "improper_inducement", False),
        ("转账这一步我真不能替您做，您在APP里点，我电话里陪着", "account_custody", True),
        ("测评结果我改不了，是系统按您的答案算的", "suitability_evasion", True),
        ("这一步我不能替您做，回头单独跟您说怎么弄", "account_custody", False),
        ("今年分红多少要看公司经营，去年是3.5%", "misleading_promotion", True),
        ("有人叫您在问卷里都选最高那项的话，别听他的", "suitability_evasion", True),
        ("别听他们的，问卷都选最高那项就行", "suitability_evasion", False),
        ("冇得保证收益嘅，基金会跌㗎", "guaranteed_return", True),
        ("保本的理财现在已经没有了", "misleading_promotion", True),
        ("红包就不用了，心意我领了", "improper_inducement", True),
        ("回头我把差价用红包退给您", "improper_inducement", False),
        ("年化8%是去年的数据，今年未必能达到", "misleading_promotion", True),
        ("演示的那几档都别当成承诺，以合同为准", "misleading_promotion", True),
        ("下周有没有利好谁知道，别听群里瞎说", "insider_tip", True),
        ("研究所内部的票，外面还不知道", "insider_tip", False),
        ("办卡的时候填的手机号要是本人的", "suitability_evasion", True),
        ("测评得您本人做，不然用您儿子的也行", "suitability_evasion", False),
        ("您年纪大了，咱们挑低风险的，稳字当头", "suitability_evasion", True),
        ("测评别选保守，不然买不了R3", "suitability_evasion", False),
        ("我哋唔可以私下收钱，要经公司账户", "off_book_dealing", True),
        ("测评我是不能帮你搞的，你自己弄", "suitability_evasion", True),
        ("信用卡分期不是零利率，每期有手续费", "misleading_promotion", True),
        ("指数基金一样会跌，前年就回撤了两成", "misleading_promotion", True),
        ("这个基金不会亏，放心", "guaranteed_return", False),
        ("这款R4您确实买不了，规定就是这样", "suitability_evasion", True),
        ("这款R4您确实买不了，换您儿子名义就行", "suitability_evasion", False),
        ("购汇额度不能拆给家里人分开购，外管局会关注", "off_book_dealing", True),
        ("外币现钞不能让亲戚帮您代换，要本人来", "off_book_dealing", True),
        ("这一步不能帮您做，换个名义就行", "off_book_dealing", False),
        ("申购要在15点前提交，之后按下个工作日的净值算", "misleading_promotion", True),
        ("APP提示新版本的话去应用商店更新一下", "guaranteed_return", True),
        ("这只私募仅限合格投资者，您得先做认定", "suitability_evasion", True),
        ("高股息也不是稳的，股价一跌就吃掉好几年股息", "guaranteed_return", True),
        ("这只私募仅限合格投资者，资产证明我帮您弄", "suitability_evasion", False),
    ],
)
def test_counter_evidence(text: str, category: str, countered: bool) -> None:
    from compliance_nlp.lexicon import DomainAnchors
    from compliance_nlp.normalize import normalize

    assert (category in DomainAnchors().countered(normalize(text).text)) is countered


# What a line must say for a category's act to be there (anchors.json category_ground):
# account custody needs the advisor or a handing-over or acting verb, in the line or in
# the customer turn it answers. Written for this test.
@pytest.mark.parametrize(
    ("text", "answered", "ungrounded"),
    [
        ("密码输错三次会锁，您慢慢来", "", True),
        ("验证码是您自己输的，一分钟内有效", "", True),
        ("密码发我一下", "", False),
        ("U盾先搁这儿", "", False),
        ("好的收到", "验证码发你了", False),
    ],
)
def test_category_ground(text: str, answered: str, ungrounded: bool) -> None:
    from compliance_nlp.lexicon import DomainAnchors
    from compliance_nlp.normalize import normalize

    found = DomainAnchors().ungrounded(normalize(text).text, normalize(answered).text)
    assert ("account_custody" in found) is ungrounded


# An insider tip needs the market, a source, a time or a certainty.
@pytest.mark.parametrize(
    ("text", "answered", "ungrounded"),
    [
        ("账户明细我帮您导出来了，发您邮箱", "", True),
        ("这只下个月百分百突破前高", "", False),
        ("🤫 低调", "听说那家车企下个月要被收购？", False),
    ],
)
def test_insider_tip_ground(text: str, answered: str, ungrounded: bool) -> None:
    from compliance_nlp.lexicon import DomainAnchors
    from compliance_nlp.normalize import normalize

    found = DomainAnchors().ungrounded(normalize(text).text, normalize(answered).text)
    assert ("insider_tip" in found) is ungrounded


def test_countered_model_finding_is_review_only(rules_only: Analyzer) -> None:
    from compliance_nlp.types import Finding

    text = "美股基金有汇率风险，收益按人民币算"
    model = Finding(
        category="misleading_promotion",
        severity="review",
        start=0,
        end=len(text),
        evidence=text,
        rule_id="model:test",
        source="model",
        basis="",
        score=0.95,
    )
    countered = rules_only.anchors.countered(text)
    kept = rules_only._combine([], [model], text, 0.0, countered=countered)
    assert [f.severity for f in kept] == ["review"]
    assert [f.severity for f in rules_only._combine([], [model], text, 0.0)] == ["violation"]

"""Question and answer frames (``rules/dialogue.json``): a reply judged by what was asked.

The rules alone (no model) must already read the pair: an assurance or compliant reply
to a question that names a forbidden thing is a violation of the category the question
names, with the customer turn named in the finding; refusals, corrections and accurate
facts stay clean. The sentences here are written for this test, in the annotators'
register, not copied from a labelled file.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from compliance_nlp import Analyzer, AnalyzerConfig
from compliance_nlp.dialogue import DialogueRules
from compliance_nlp.rules import RULES_DIR, RuleDataError, load_ruleset
from compliance_nlp.types import Turn


def _violations(analyzer: Analyzer, question: str, reply: str) -> dict[str, int | None]:
    result = analyzer.analyze(reply, "advisor", context=[Turn("customer", question)])
    return {f.category: f.context_index for f in result.violations if f.severity == "violation"}


@pytest.mark.parametrize(
    ("question", "reply", "category"),
    [
        ("那款理财到期了本钱还能一分不少拿回来吧？", "是的👌", "guaranteed_return"),
        ("买了这个以后会不会亏啊", "不会的，您放心", "guaranteed_return"),
        ("风险测评我弄了好几次都没过", "交给我，我来弄", "suitability_evasion"),
        ("你帮我把问卷填了吧，我看不懂", "好的", "suitability_evasion"),
        ("我在外地回不去，钱能先转给你吗", "可以，转我就行", "off_book_dealing"),
        ("手机上来了个验证码，要发给你吗", "发我吧", "account_custody"),
        ("在你这买了这么多，有没有返点啊", "老规矩，少不了您的", "improper_inducement"),
        ("听说那家公司要被并购了，有风声吗", "嗯，早点上车", "insider_tip"),
        ("这个理财跟存定期是一回事吧", "差不多，一个意思", "misleading_promotion"),
        # a product likened to a deposit is no question about deposits alone
        ("这个收益凭证跟存定期差不多吧？", "差不多的，就是利息高点", "misleading_promotion"),
        # 不保本 rejected is protection demanded, not a non-guaranteed product
        ("不保本的我可不要，我只要一分不亏的", "放心，就是您要的那种", "guaranteed_return"),
        # a no-loss premise confirmed; the answer set apart by a space or ～ only
        ("每年稳稳拿七个点，不会亏的是吧", "嗯嗯 您记得没错", "guaranteed_return"),
        ("本金到时候总归是在的吧", "是滴～就这么简单", "guaranteed_return"),
    ],
)
def test_an_answer_that_goes_along_is_the_category_the_question_names(
    rules_only: Analyzer, question: str, reply: str, category: str
) -> None:
    found = _violations(rules_only, question, reply)
    assert category in found, found
    assert found[category] == 0  # the finding names the customer turn
    assert _violations(rules_only, "", reply).get(category) is None  # alone: nothing


@pytest.mark.parametrize(
    ("question", "reply"),
    [
        ("那款理财到期了本钱还能一分不少拿回来吧？", "这个没法保证，净值型的产品会有波动"),
        ("买了这个以后会不会亏啊", "会的，净值会上下波动"),
        ("风险测评我弄了好几次都没过", "测评得您本人如实做，我不能代做"),
        ("我在外地回不去，钱能先转给你吗", "不行的，钱只能打到产品的对公账户"),
        ("手机上来了个验证码，要发给你吗", "千万别发给任何人，包括我"),
        ("在你这买了这么多，有没有返点啊", "这个真没有，只有行里公开的积分活动"),
        ("听说那家公司要被并购了，有风声吗", "我不知道，一切以公告为准"),
        ("这个理财跟存定期是一回事吧", "不一样，理财不是存款，有风险"),
        # accurate facts after the question
        ("我那笔三年定期到期本金能拿回来吧", "能的，到期本息都会转回您卡上"),
        ("大额存单是不是存款啊", "对，大额存单就是存款，受存款保险保护"),
        ("结构性存款最低能拿多少", "合同里写的最低收益率1.5%，最高能到3%"),
        ("这个是非保本的吧", "对的"),
        ("这是不是非保本的", "是的 非保本"),
        # an everyday question meets the same short affirmatives
        ("明天上午能到账吗", "是的👌"),
        ("周六网点开门吗", "开的，九点到四点"),
    ],
)
def test_refusals_corrections_and_facts_stay_clean(
    analyzer: Analyzer, question: str, reply: str
) -> None:
    assert _violations(analyzer, question, reply) == {}


def test_a_question_stays_open_until_the_advisor_refuses_it(rules_only: Analyzer) -> None:
    asked = [Turn("customer", "我账户你来帮我操作吧，我上班没空"), Turn("advisor", "好的")]
    later = [*asked, Turn("customer", "嗯"), Turn("customer", "弄好了跟我说一声")]
    result = rules_only.analyze("没问题，我来弄", "advisor", context=later)
    custody = [f for f in result.violations if f.category == "account_custody"]
    assert custody and custody[0].context_index == 0
    refused = [
        Turn("customer", "我账户你来帮我操作吧，我上班没空"),
        Turn("advisor", "这个不行，得您本人操作，我可以教您"),
        Turn("customer", "那你明天教我"),
    ]
    result = rules_only.analyze("好，明晚八点", "advisor", context=refused)
    assert result.violations == ()


def test_dialogue_data_is_validated(tmp_path: Path) -> None:
    for name in ("lexicon.json", "bases.json", "cues.json", "sentiment.json", "intents.json"):
        shutil.copy(RULES_DIR / name, tmp_path / name)
    ruleset = load_ruleset(str(tmp_path))
    # A rules directory without its own dialogue.json reads the shipped one.
    assert DialogueRules(ruleset, str(tmp_path)).version
    data = json.loads((RULES_DIR / "dialogue.json").read_text(encoding="utf-8"))
    data["frames"][0]["category"] = "promise"
    (tmp_path / "dialogue.json").write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(RuleDataError, match="unknown category"):
        DialogueRules(ruleset, str(tmp_path))
    data = json.loads((RULES_DIR / "dialogue.json").read_text(encoding="utf-8"))
    data["frames"][0]["ask"] = ["(unclosed"]
    (tmp_path / "dialogue.json").write_text(json.dumps(data, ensure_ascii=False))
    with pytest.raises(RuleDataError, match="bad pattern"):
        Analyzer(AnalyzerConfig(rules_dir=str(tmp_path), use_model=False))

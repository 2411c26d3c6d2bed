"""PII masking: every ID/card/phone masked, no business number touched."""

from __future__ import annotations

import pytest

from compliance_nlp import AnalyzerConfig, analyze
from compliance_nlp.pii import _luhn_ok


def _card(prefix: str = "622202020000123456") -> str:
    return next(prefix + str(d) for d in range(10) if _luhn_ok(prefix + str(d)))


def _id_number(body: str = "11010119900307451") -> str:
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(d) * w for d, w in zip(body, weights, strict=True)) % 11]


CARD = _card()
ID = _id_number()


@pytest.mark.parametrize(
    ("text", "kind", "masked"),
    [
        ("我手机13812345678", "phone", "我手机138****5678"),
        ("+86 138-1234-5678 找我", "phone", "+86 138-****-5678 找我"),
        ("电话１３８１２３４５６７８", "phone", "电话１３８****５６７８"),
        (f"身份证{ID}", "id_card", f"身份证{ID[:6]}********{ID[-4:]}"),
        (f"卡号{CARD}", "bank_card", f"卡号{CARD[:3]}{'*' * (len(CARD) - 7)}{CARD[-4:]}"),
        ("邮箱zhangsan@example.com", "email", "邮箱z*******@example.com"),
        # a phone number given as a WeChat id, glued to the V
        ("加我私人V13521619354聊", "phone", "加我私人V135****9354聊"),
        # a word of time after the number is not a unit of it: no number of days or
        # years runs to eleven digits (「天天」 here is "every day")
        ("我的号码19571875876天天收到短信", "phone", "我的号码195****5876天天收到短信"),
        ("19912345678年前留过的那个", "phone", "199****5678年前留过的那个"),
    ],
)
def test_pii_is_masked_default_style(text: str, kind: str, masked: str) -> None:
    result = analyze(text, "customer")
    assert [p.type for p in result.pii] == [kind]
    assert result.masked_text == masked


@pytest.mark.parametrize(
    "text",
    [
        "订单号6228480402564890018已提交",
        "合同编号HT-2024-0088123，金额1380000元",
        "保单号P440112202403150018已生效",
        "客服95588，信用卡中心400-820-8888",
        "买了600519和510300，2024年3月15日到期",
        "转账13812345678元",
        "流水号6222020200001234567",
        "工单编号13812345678901",
        "净值1.0523，规模32.6亿元",
        "批文HT13812345678已下发",
    ],
)
def test_non_pii_numbers_are_untouched(text: str) -> None:
    result = analyze(text, "advisor")
    assert result.pii == ()
    assert result.masked_text == text


def test_invalid_checksum_id_is_not_masked() -> None:
    bad = ID[:-1] + ("0" if ID[-1] != "0" else "1")
    assert analyze(f"编号{bad}", "customer").pii == ()


@pytest.mark.parametrize(
    ("style", "expected"),
    [("full", "电话***********"), ("tag", "电话[手机号]"), ("strict", "电话*******5678")],
)
def test_mask_styles(style: str, expected: str) -> None:
    result = analyze(
        "电话13812345678", "customer", AnalyzerConfig(use_model=False, mask_style=style)
    )
    assert result.masked_text == expected


def test_pii_offsets_point_at_original() -> None:
    text = f"我的卡{CARD}和手机13900001111"
    result = analyze(text, "customer")
    spans = {p.type: text[p.start : p.end] for p in result.pii}
    assert spans == {"bank_card": CARD, "phone": "13900001111"}


def test_evidence_never_carries_a_number_the_masked_text_hides() -> None:
    from compliance_nlp import analyze
    from compliance_nlp.pii import find_pii, mask_span

    text = "身份证110101199003074514发我，我帮你代买，保证收益10%"
    result = analyze(text, "advisor")
    assert result.violations
    for f in result.violations:
        assert "110101199003074514" not in f.evidence
        assert "074514" not in f.evidence or "********" in f.evidence
    # A span that ends inside a number is widened: the number is masked whole.
    pii = find_pii(text)
    cut = mask_span(text, pii, 0, 10)
    assert cut == "身份证110101********4514"
    assert mask_span(text, pii, 22, 30) == text[22:30]  # no number touched: unchanged


def test_pii_context_words_are_data(monkeypatch: pytest.MonkeyPatch) -> None:
    """Which labels make a number a business reference is read from rules/pii.json."""
    import json

    from compliance_nlp import pii
    from compliance_nlp.rules import RULES_DIR

    words = json.loads((RULES_DIR / "pii.json").read_text(encoding="utf-8"))
    text = "工单13812345678已受理"
    assert pii.find_pii(text) == []  # 工单 introduces a work-order number
    words["business_number_labels"].remove("工单")
    monkeypatch.setattr(pii, "load_json", lambda name: words)
    pii.load_pii_words.cache_clear()
    try:
        assert [m.type for m in pii.find_pii(text)] == ["phone"]
        assert pii.mask_pii(text, pii.find_pii(text), "tag") == "工单[手机号]已受理"
    finally:
        pii.load_pii_words.cache_clear()


def test_malformed_pii_words_fail_when_the_analyzer_is_built(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import json

    from compliance_nlp import Analyzer, pii
    from compliance_nlp.rules import RULES_DIR, RuleDataError

    words = json.loads((RULES_DIR / "pii.json").read_text(encoding="utf-8"))
    monkeypatch.setattr(pii, "load_json", lambda name: {**words, "mask_tags": {"phone": "[x]"}})
    pii.load_pii_words.cache_clear()
    try:
        with pytest.raises(RuleDataError, match="mask_tags"):
            Analyzer(AnalyzerConfig(use_model=False))
    finally:
        pii.load_pii_words.cache_clear()

"""Bad input: a valid analysis or a clear AnalysisError, never a crash."""

from __future__ import annotations

import pytest

from compliance_nlp import Analysis, AnalysisError, Analyzer


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "😀😀😀🔥🔥",
        "\x00\x01\x02\xff\ufffd garbage \x7f",
        "bytes-ish \udcff lone surrogate",
        "Hello 您好 こんにちは 안녕하세요 Привет مرحبا 保本",
        "保本保息" * 25_000,  # 100 KB of text
        "1" * 5000,
        "！" * 1000,
    ],
)
@pytest.mark.parametrize("role", ["advisor", "customer"])
def test_bad_text_gives_valid_analysis(analyzer: Analyzer, text: str, role: str) -> None:
    result = analyzer.analyze(text, role)  # type: ignore[arg-type]
    assert isinstance(result, Analysis)
    assert len(result.masked_text) == len(text)
    result.masked_text.encode("utf-8")  # always writable
    for f in result.violations:
        assert 0 <= f.start <= f.end <= len(text)


@pytest.mark.parametrize(
    ("text", "role"),
    [
        (b"\xe4\xbf\x9d", "advisor"),
        (None, "advisor"),
        (123, "customer"),
        ("hi", "bot"),
        ("x" * 300_001, "advisor"),
    ],
)
def test_refused_input_raises_analysis_error(analyzer: Analyzer, text: object, role: str) -> None:
    with pytest.raises(AnalysisError):
        analyzer.analyze(text, role)  # type: ignore[arg-type]

"""The analyzer's shortcuts on the with-context path change no result.

An advisor line read with its context costs a second model reading (the line alone)
only where that reading can change what is reported (``Analyzer._alone_decides``). The
development thread files are analysed as shipped and with every shortcut off; the two
must agree on every finding, its severity, score, evidence and the customer turn it names.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compliance_nlp import Analyzer, AnalyzerConfig
from compliance_nlp.training.threads import thread_rows
from compliance_nlp.types import Turn

DATA = Path(__file__).resolve().parents[2] / "compliance_nlp" / "training" / "data"


def _advisor_rows() -> list[dict[str, object]]:
    rows = []
    for path in sorted(DATA.glob("threads_dev*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                rows += [r for r in thread_rows(json.loads(line)) if r["role"] == "advisor"]
    return rows


def _dump(analyzer: Analyzer, rows: list[dict[str, object]]) -> list[dict[str, object]]:
    out = []
    for i in range(0, len(rows), 128):
        chunk = rows[i : i + 128]
        contexts = [[Turn.parse(t) for t in r["context"]] or None for r in chunk]  # type: ignore[attr-defined]
        items = [(str(r["text"]), str(r["role"])) for r in chunk]
        out += [a.to_dict() for a in analyzer.analyze_many(items, contexts)]
    return out


def test_the_line_alone_is_read_only_where_it_decides(monkeypatch: pytest.MonkeyPatch) -> None:
    analyzer = Analyzer(AnalyzerConfig())
    rows = _advisor_rows()
    assert len(rows) > 1000
    shortcut = _dump(analyzer, rows)
    read = []
    decides = Analyzer._alone_decides

    def counted(*args: object) -> bool:
        read.append(decides(*args))  # type: ignore[arg-type]
        return True

    monkeypatch.setattr(Analyzer, "_alone_decides", staticmethod(counted))
    full = _dump(analyzer, rows)
    # The shortcut was taken (some lines were not read alone) and changed nothing.
    assert read.count(False) > 0 and read.count(True) > 0
    assert [r["id"] for r, a, b in zip(rows, shortcut, full, strict=True) if a != b] == []
    assert shortcut == full

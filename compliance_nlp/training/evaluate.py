"""Quality figures on labelled JSONL (the held-out split or a bank's own sample).

The targets come from issue 3: violation recall ≥ 0.90, clean advisor messages flagged
``violation`` ≤ 5%, right category among a violating message's findings ≥ 0.85, intent
accuracy ≥ 0.85, every ID/card/phone masked and no non-PII number masked.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from compliance_nlp.analyze import Analyzer
from compliance_nlp.rules import CATEGORIES
from compliance_nlp.types import Analysis, Turn

__all__ = ["EvalReport", "TARGETS", "evaluate", "read_jsonl"]

TARGETS: dict[str, tuple[str, float]] = {
    "violation_recall": (">=", 0.90),
    "clean_flagged_violation": ("<=", 0.05),
    "category_hit": (">=", 0.85),
    "intent_accuracy": (">=", 0.85),
    "pii_recall": (">=", 1.0),
    "non_pii_masked": ("<=", 0.0),
}


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass
class EvalReport:
    n: int = 0
    violating: int = 0
    caught_violation: int = 0
    caught_any: int = 0
    category_hits: int = 0
    clean: int = 0
    clean_flagged_violation: int = 0
    clean_flagged_any: int = 0
    per_category: dict[str, Counter[str]] = field(default_factory=dict)
    intent_total: int = 0
    intent_correct: int = 0
    confusion: Counter[tuple[str, str]] = field(default_factory=Counter)
    sentiment_total: int = 0
    sentiment_correct: int = 0
    pii_expected: int = 0
    pii_found: int = 0
    pii_spurious: int = 0
    misses: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {
            "violation_recall": _ratio(self.caught_violation, self.violating),
            "violation_recall_any_severity": _ratio(self.caught_any, self.violating),
            "clean_flagged_violation": _ratio(self.clean_flagged_violation, self.clean),
            "clean_flagged_any_severity": _ratio(self.clean_flagged_any, self.clean),
            "category_hit": _ratio(self.category_hits, self.violating),
            "intent_accuracy": _ratio(self.intent_correct, self.intent_total),
            "sentiment_accuracy": _ratio(self.sentiment_correct, self.sentiment_total),
            "pii_recall": _ratio(self.pii_found, self.pii_expected) if self.pii_expected else 1.0,
            "non_pii_masked": float(self.pii_spurious),
        }

    def failed_targets(self) -> list[str]:
        m = self.metrics()
        failed = []
        for name, (op, bound) in TARGETS.items():
            ok = m[name] >= bound if op == ">=" else m[name] <= bound
            if not ok:
                failed.append(f"{name}={m[name]:.3f} (target {op} {bound})")
        return failed

    def render(self) -> str:
        m = self.metrics()
        lines = [
            f"messages: {self.n}  violating advisor: {self.violating}  "
            f"clean advisor: {self.clean}  "
            f"labelled customer intents: {self.intent_total}"
        ]
        for name, value in m.items():
            target = TARGETS.get(name)
            mark = f"  (target {target[0]} {target[1]})" if target else ""
            lines.append(f"  {name:32s} {value:.3f}{mark}")
        lines.append("per category (message level):")
        lines.append(
            f"  {'category':24s} {'prec':>6s} {'recall':>6s} {'tp':>4s} {'fp':>4s} {'fn':>4s}"
        )
        for cat in CATEGORIES:
            c = self.per_category.get(cat, Counter())
            p = _ratio(c["tp"], c["tp"] + c["fp"])
            r = _ratio(c["tp"], c["tp"] + c["fn"])
            lines.append(f"  {cat:24s} {p:6.3f} {r:6.3f} {c['tp']:4d} {c['fp']:4d} {c['fn']:4d}")
        labels = sorted({g for g, _ in self.confusion} | {p for _, p in self.confusion})
        if labels:
            short = [lab[:8] for lab in labels]
            lines.append("intent confusion (rows = gold, columns = predicted):")
            lines.append("  " + " " * 18 + " ".join(f"{s:>8s}" for s in short))
            for g in labels:
                row = " ".join(f"{self.confusion[(g, p)]:8d}" for p in labels)
                lines.append(f"  {g:18s}{row}")
        failed = self.failed_targets()
        lines.append("targets: " + ("all met" if not failed else "NOT met: " + "; ".join(failed)))
        return "\n".join(lines)


def score_row(report: EvalReport, row: dict[str, Any], analysis: Analysis) -> None:
    report.n += 1
    gold_cats = {v["category"] for v in row.get("violations") or []}
    found_violation = {f.category for f in analysis.violations if f.severity == "violation"}
    found_any = {f.category for f in analysis.violations}
    if row["role"] == "advisor":
        if gold_cats:
            report.violating += 1
            report.caught_violation += bool(found_violation)
            report.caught_any += bool(found_any)
            report.category_hits += bool(gold_cats & found_violation)
            if not (gold_cats & found_violation):
                report.misses.append(
                    {
                        "id": row.get("id"),
                        "text": row["text"],
                        "gold": sorted(gold_cats),
                        "found": sorted(found_any),
                    }
                )
        else:
            report.clean += 1
            report.clean_flagged_violation += bool(found_violation)
            report.clean_flagged_any += bool(found_any)
            if found_violation:
                report.misses.append(
                    {
                        "id": row.get("id"),
                        "text": row["text"],
                        "gold": [],
                        "found": sorted(found_violation),
                    }
                )
        for cat in CATEGORIES:
            c = report.per_category.setdefault(cat, Counter())
            if cat in gold_cats and cat in found_violation:
                c["tp"] += 1
            elif cat in found_violation:
                c["fp"] += 1
            elif cat in gold_cats:
                c["fn"] += 1
    gold_intent = row.get("intent")
    if row["role"] == "customer" and gold_intent:
        report.intent_total += 1
        predicted = analysis.intent or "none"
        report.intent_correct += predicted == gold_intent
        report.confusion[(gold_intent, predicted)] += 1
    if row.get("sentiment"):
        report.sentiment_total += 1
        report.sentiment_correct += analysis.sentiment == row["sentiment"]
    gold_pii = {(p["type"], p["start"], p["end"]) for p in row.get("pii") or []}
    found_pii = {(p.type, p.start, p.end) for p in analysis.pii}
    report.pii_expected += len(gold_pii)
    report.pii_found += len(gold_pii & found_pii)
    spurious = found_pii - gold_pii
    report.pii_spurious += len(spurious)
    if spurious or gold_pii - found_pii:
        report.misses.append(
            {
                "id": row.get("id"),
                "text": "<pii line>",
                "gold_pii": sorted(gold_pii),
                "found_pii": sorted(found_pii),
            }
        )


def evaluate(rows: Iterable[dict[str, Any]], analyzer: Analyzer, *, batch: int = 128) -> EvalReport:
    report = EvalReport()
    buffer: list[dict[str, Any]] = []

    def flush() -> None:
        # Rows from a thread file (``threads.thread_rows``) carry their conversation.
        contexts = [
            tuple(Turn(t["role"], t["text"]) for t in r["context"]) if r.get("context") else None
            for r in buffer
        ]
        results = analyzer.analyze_many([(r["text"], r["role"]) for r in buffer], contexts)
        for r, a in zip(buffer, results, strict=True):
            score_row(report, r, a)
        buffer.clear()

    for row in rows:
        buffer.append(row)
        if len(buffer) >= batch:
            flush()
    if buffer:
        flush()
    return report

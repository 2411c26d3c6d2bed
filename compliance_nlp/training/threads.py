"""Thread files: whole conversations with every advisor turn labelled in context.

The format (``data/ANNOTATION_THREADS.md``): one thread per line, ``{"id", "turns": […]}``;
customer turns carry ``intent``/``sentiment``, advisor turns ``violations`` whose
``because`` names the earlier turn that gives the line its meaning (a *context-only*
violation) or is null (*line-visible*: the line alone breaks the rule).

Training reads a thread as line rows with a ``context`` (the turns before each line),
so the model learns from every turn what the analyzer sees at inference. Evaluation
analyses every advisor turn with the turns before it and reports what a reviewer cares
about: context-only violations caught, line-visible violations caught, and clean
threads that raised any violation at all.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from compliance_nlp.analyze import Analyzer
from compliance_nlp.rules import CATEGORIES
from compliance_nlp.types import Turn

__all__ = ["THREAD_TARGETS", "ThreadReport", "evaluate_threads", "is_thread", "thread_rows"]

THREAD_TARGETS: dict[str, tuple[str, float]] = {
    "context_only_recall": (">=", 0.90),
    "line_visible_recall": (">=", 0.95),
    "clean_threads_flagged": ("<=", 0.04),
}


def is_thread(row: dict[str, Any]) -> bool:
    return isinstance(row.get("turns"), list)


def thread_rows(thread: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Each turn as a line row (the line format) with the turns before it as ``context``."""
    turns = thread["turns"]
    for i, turn in enumerate(turns):
        row = {k: v for k, v in turn.items() if k != "because"}
        row["id"] = f"{thread.get('id')}#{i}"
        row.setdefault("violations", [])
        row.setdefault("intent", None)
        row.setdefault("sentiment", None)
        row["context"] = [{"role": t["role"], "text": t["text"]} for t in turns[:i]]
        yield row


def _ratio(num: int, den: int) -> float:
    return num / den if den else 0.0


@dataclass
class ThreadReport:
    threads: int = 0
    context_only: int = 0
    context_only_caught: int = 0
    line_visible: int = 0
    line_visible_caught: int = 0
    clean_threads: int = 0
    clean_threads_flagged: int = 0
    named_context: int = 0  # context-only catches whose finding names the customer turn
    per_category: dict[str, Counter[str]] = field(default_factory=dict)
    misses: list[dict[str, Any]] = field(default_factory=list)

    def metrics(self) -> dict[str, float]:
        return {
            "context_only_recall": _ratio(self.context_only_caught, self.context_only),
            "line_visible_recall": _ratio(self.line_visible_caught, self.line_visible),
            "clean_threads_flagged": _ratio(self.clean_threads_flagged, self.clean_threads),
            "context_named": _ratio(self.named_context, self.context_only_caught),
        }

    def failed_targets(self) -> list[str]:
        failed = []
        values = self.metrics()
        for name, (op, target) in THREAD_TARGETS.items():
            value = values[name]
            ok = value >= target if op == ">=" else value <= target
            if not ok:
                failed.append(f"{name}={value:.3f} (target {op} {target})")
        return failed

    def render(self) -> str:
        lines = [
            f"threads: {self.threads}  context-only violations: {self.context_only}  "
            f"line-visible: {self.line_visible}  clean threads: {self.clean_threads}"
        ]
        for name, value in self.metrics().items():
            target = THREAD_TARGETS.get(name)
            note = f"  (target {target[0]} {target[1]})" if target else ""
            lines.append(f"  {name:28s} {value:.3f}{note}")
        lines.append("per category (context-only caught / total, clean-thread false flags):")
        for cat in CATEGORIES:
            c = self.per_category.get(cat, Counter())
            lines.append(
                f"  {cat:24s} {c['ctx_caught']:4d}/{c['ctx']:<4d} "
                f"line-visible {c['vis_caught']:3d}/{c['vis']:<3d} false {c['false']:3d}"
            )
        failed = self.failed_targets()
        lines.append("targets: " + ("all met" if not failed else "NOT met: " + "; ".join(failed)))
        return "\n".join(lines)


def evaluate_threads(threads: Iterable[dict[str, Any]], analyzer: Analyzer) -> ThreadReport:
    report = ThreadReport()
    for thread in threads:
        report.threads += 1
        turns = thread["turns"]
        advisor = [i for i, t in enumerate(turns) if t["role"] == "advisor"]
        contexts = [[Turn(t["role"], t["text"]) for t in turns[:i]] for i in advisor]
        results = analyzer.analyze_many([(turns[i]["text"], "advisor") for i in advisor], contexts)
        gold_any = any(turns[i].get("violations") for i in advisor)
        flagged_clean = False
        for i, analysis in zip(advisor, results, strict=True):
            found = {f.category: f for f in analysis.violations if f.severity == "violation"}
            gold = {v["category"]: v.get("because") for v in turns[i].get("violations") or []}
            for cat, because in gold.items():
                c = report.per_category.setdefault(cat, Counter())
                hit = cat in found
                kind = "ctx" if because is not None else "vis"
                c[kind] += 1
                c[f"{kind}_caught"] += hit
                if because is not None:
                    report.context_only += 1
                    report.context_only_caught += hit
                    report.named_context += hit and found[cat].context_index is not None
                else:
                    report.line_visible += 1
                    report.line_visible_caught += hit
                if not hit:
                    report.misses.append(
                        {
                            "id": f"{thread.get('id')}#{i}",
                            "kind": kind,
                            "gold": cat,
                            "because": turns[because]["text"] if because is not None else None,
                            "text": turns[i]["text"],
                            "found": sorted(found),
                            "by": sorted({f.rule_id for f in found.values()}),
                        }
                    )
            if not gold_any and found:
                flagged_clean = True
                for cat in found:
                    report.per_category.setdefault(cat, Counter())["false"] += 1
                report.misses.append(
                    {
                        "id": f"{thread.get('id')}#{i}",
                        "kind": "false",
                        "before": turns[i - 1]["text"] if i else None,
                        "text": turns[i]["text"],
                        "found": sorted(found),
                        "by": sorted({f.rule_id for f in found.values()}),
                    }
                )
        if not gold_any:
            report.clean_threads += 1
            report.clean_threads_flagged += flagged_clean
    return report

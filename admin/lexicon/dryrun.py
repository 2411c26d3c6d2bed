"""The dry run: what a lexicon draft would add or remove, line by line, before it is published.

The draft and the published overlay are both run over the project's labelled sets
(``compliance_nlp/training/data``: the development files, advisor lines, threads with
their context) by the real analyzer — rules and model, as intake would judge — and the
findings compared line by line. Labels tell the reviewer which side a change is on: a
finding added on a line labelled clean is likely a false positive, one removed from a
line labelled a violation a miss.

The labelled sets live in the source checkout, not in the installed package. Where they
are absent the dry run says so and uses the advisor messages stored over the last
``STORED_DAYS`` days instead (masked text; no labels, no context).

Only lines that hold a phrase the draft changes can be judged differently (a term or an
exception added, removed or edited, a pack switched): those are analysed, twice; every
other line's findings are the same by construction, which keeps a dry run to seconds.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import compliance_nlp
from bot import rules_overlay
from compliance_nlp.normalize import normalize
from compliance_nlp.overlay import Overlay, normalize_term
from compliance_nlp.types import Turn

STORED_DAYS = 30
STORED_LIMIT = 20_000
# Lines kept for the page (and in the version's record); the counts cover every line.
LINES_SHOWN = 200
DATA_DIR = Path(compliance_nlp.__file__).resolve().parent / "training" / "data"


@dataclass(frozen=True)
class Sample:
    where: str  # "dev7.jsonl:12" or "消息 #81 · 05-02 10:31"
    text: str
    context: tuple[Turn, ...] = ()
    # The labelled categories (empty: labelled clean); None: no label (stored messages).
    labelled: tuple[str, ...] | None = None


@dataclass(frozen=True)
class Brief:
    category: str
    severity: str
    rule_id: str
    evidence: str
    suggestion: str = ""

    @property
    def key(self) -> tuple[str, str, str]:
        return (self.category, self.rule_id, self.evidence)


@dataclass
class LineEffect:
    where: str
    text: str
    labelled: list[str] | None
    before: list[Brief]
    after: list[Brief]
    added: list[Brief] = field(default_factory=list)
    removed: list[Brief] = field(default_factory=list)


@dataclass
class DryRun:
    dataset: str  # labelled | stored
    dataset_label: str
    note: str
    lines_total: int
    lines_checked: int
    findings_added: int = 0
    findings_removed: int = 0
    lines_newly_flagged: int = 0
    lines_cleared: int = 0
    added_on_clean: int = 0
    removed_on_violation: int = 0
    phrases: list[str] = field(default_factory=list)
    lines: list[LineEffect] = field(default_factory=list)
    lines_changed: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DryRun:
        lines = [
            LineEffect(
                where=ln["where"],
                text=ln["text"],
                labelled=ln["labelled"],
                before=[Brief(**b) for b in ln["before"]],
                after=[Brief(**b) for b in ln["after"]],
                added=[Brief(**b) for b in ln["added"]],
                removed=[Brief(**b) for b in ln["removed"]],
            )
            for ln in data.get("lines", [])
        ]
        return cls(**{**data, "lines": lines})


# ------------------------------------------------------------------ the data


def labelled_samples(directory: Path = DATA_DIR) -> list[Sample]:
    """Advisor lines of the development files and threads (blind sets are not read)."""
    samples: list[Sample] = []
    files = sorted(directory.glob("dev*.jsonl")) + sorted(directory.glob("threads_dev*.jsonl"))
    for path in files:
        with path.open(encoding="utf-8") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.strip():
                    continue
                record = json.loads(raw)
                where = f"{path.name}:{lineno}"
                if "turns" in record:
                    turns = record["turns"]
                    for i, turn in enumerate(turns):
                        if turn.get("role") != "advisor":
                            continue
                        context = tuple(
                            Turn(role=t["role"], text=str(t["text"])) for t in turns[:i]
                        )
                        samples.append(
                            Sample(
                                where=f"{where}#{i + 1}",
                                text=str(turn["text"]),
                                context=context,
                                labelled=tuple(v["category"] for v in turn.get("violations", [])),
                            )
                        )
                elif record.get("role") == "advisor":
                    samples.append(
                        Sample(
                            where=where,
                            text=str(record["text"]),
                            labelled=tuple(v["category"] for v in record.get("violations") or []),
                        )
                    )
    return samples


async def stored_samples(*, days: int = STORED_DAYS) -> list[Sample]:
    from zoneinfo import ZoneInfo

    shanghai = ZoneInfo("Asia/Shanghai")
    since = datetime.now(UTC) - timedelta(days=days)
    rows = await rules_overlay.recent_advisor_lines(since=since, limit=STORED_LIMIT)
    return [
        Sample(
            where=f"消息 #{mid} · {at.astimezone(shanghai):%m-%d %H:%M}",
            text=text,
        )
        for mid, at, text in rows
    ]


async def samples() -> tuple[str, str, str, list[Sample]]:
    """(dataset, label, note, samples): the labelled sets, else stored messages."""
    found = labelled_samples() if DATA_DIR.is_dir() else []
    if found:
        files = len({s.where.split(":")[0] for s in found})
        return (
            "labelled",
            f"标注数据集（compliance_nlp/training/data，{files} 个文件，"
            f"{len(found)} 条客户经理发言）",
            "",
            found,
        )
    stored = await stored_samples()
    return (
        "stored",
        f"最近 {STORED_DAYS} 天已存储的客户经理消息（{len(stored)} 条，已脱敏）",
        "本安装包不含标注数据集（它只在源码仓库的 compliance_nlp/training/data 中），"
        f"改用最近 {STORED_DAYS} 天已存储的消息试运行：没有人工标注，无法区分误报与漏报。",
        stored,
    )


# ------------------------------------------------------------------ the comparison


def _effective(document: dict[str, Any]) -> dict[str, Any]:
    """Terms and exceptions that apply, keyed by their normalised phrase."""
    segments = set(document.get("segments", []))

    def applies(entry: dict[str, Any]) -> bool:
        return not entry.get("segment") or entry.get("segment") in segments

    terms: dict[str, Any] = {}
    for t in document.get("terms", []):
        if applies(t):
            key = normalize_term(str(t["term"]))
            terms.setdefault(key, []).append((t["category"], t["severity"], t["basis"], t["id"]))
    exceptions: dict[str, Any] = {}
    for e in document.get("exceptions", []):
        if applies(e):
            key = normalize_term(str(e["phrase"]))
            exceptions.setdefault(key, []).append(tuple(sorted(e.get("categories", []))))
    return {"terms": terms, "exceptions": exceptions}


def changed_phrases(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Normalised phrases whose handling differs between two overlay documents."""
    a, b = _effective(before), _effective(after)
    out: set[str] = set()
    for part in ("terms", "exceptions"):
        for phrase in set(a[part]) | set(b[part]):
            was = sorted(map(str, a[part].get(phrase, [])))
            if was != sorted(map(str, b[part].get(phrase, []))):
                out.add(phrase)
    return sorted(p for p in out if p)


def _briefs(analysis: Any) -> list[Brief]:
    return [
        Brief(
            category=f.category,
            severity=f.severity,
            rule_id=f.rule_id if f.source == "rule" else "模型",
            evidence=f.evidence,
            suggestion=f.suggestion or "",
        )
        for f in analysis.violations
    ]


async def run(
    *,
    analyzer: Any,
    published: Overlay | None,
    draft: Overlay,
    data: tuple[str, str, str, Sequence[Sample]] | None = None,
) -> DryRun:
    """Compare ``draft`` with ``published`` (None: the shipped rules alone) over the data."""
    dataset, label, note, pool = data if data is not None else await samples()
    phrases = changed_phrases(published.data if published else {}, draft.data)
    result = DryRun(
        dataset=dataset,
        dataset_label=label,
        note=note,
        lines_total=len(pool),
        lines_checked=0,
        phrases=phrases,
    )
    if not phrases:
        return result
    candidates = [s for s in pool if any(p in normalize(s.text).text for p in phrases)]
    result.lines_checked = len(candidates)
    if not candidates:
        return result
    items = [(s.text, "advisor") for s in candidates]
    contexts = [s.context or None for s in candidates]
    before = await analyzer.analyze_many(items, contexts, overlay=published)
    after = await analyzer.analyze_many(items, contexts, overlay=draft)
    for sample, was, now in zip(candidates, before, after, strict=True):
        old, new = _briefs(was), _briefs(now)
        old_keys, new_keys = {b.key for b in old}, {b.key for b in new}
        added = [b for b in new if b.key not in old_keys]
        removed = [b for b in old if b.key not in new_keys]
        if not added and not removed:
            continue
        result.lines_changed += 1
        result.findings_added += len(added)
        result.findings_removed += len(removed)
        flagged_before = any(b.severity == "violation" for b in old)
        flagged_after = any(b.severity == "violation" for b in new)
        result.lines_newly_flagged += int(flagged_after and not flagged_before)
        result.lines_cleared += int(flagged_before and not flagged_after)
        if sample.labelled is not None:
            result.added_on_clean += int(bool(added) and not sample.labelled)
            result.removed_on_violation += int(bool(removed) and bool(sample.labelled))
        if len(result.lines) < LINES_SHOWN:
            result.lines.append(
                LineEffect(
                    where=sample.where,
                    text=sample.text,
                    labelled=list(sample.labelled) if sample.labelled is not None else None,
                    before=old,
                    after=new,
                    added=added,
                    removed=removed,
                )
            )
    return result

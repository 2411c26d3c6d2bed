"""Quality on labelled data, computed with the shipped rules and models.

The labelled files (``compliance_nlp/training/data/README.md`` says who wrote each),
two roles:

- ``dev.jsonl`` … ``dev16.jsonl``, ``dev19``, ``dev20``, ``dev22``, ``dev24``, ``dev26``,
  ``dev28``, ``dev30``, ``dev32``, ``dev34``, ``dev36``, ``dev38``, ``dev40``, ``dev42``
  and ``dev44`` are the *development pool*'s line sets: hand-written lines by people other
  than the corpus generator, one annotator per file. ``dev3`` … ``dev6``, ``dev19``,
  ``dev20`` and the even ``dev22`` … ``dev44`` were blind sets; once measured they stopped
  being held out. The models are trained on the pool (``train.TrainOptions.dev_files``,
  each line up-weighted) and the thresholds are calibrated by cross-validation that holds
  out whole files (``compliance_nlp.training.crossval``), so the dev figures here are
  fitted, not estimates: they are regression guards only.
- ``dev17``, ``dev18`` and the odd ``dev21`` … ``dev45`` are everyday advisor chat
  (greetings, logistics, wishes: all clean) and ``threads_dev1`` … are conversations
  labelled in context; both are part of the development pool too.
- The held-out sets are written by independent annotators who never saw the rules,
  corpus or models, and are never read while they are developed: ``blind19`` (the
  issue-3 line targets, and issue 9's clean advisor lines flagged ≤ 0.03),
  ``blind_everyday14`` (issue 9: at most 1 in 100 everyday advisor lines flagged) and
  ``blind_threads26``/``blind_threads27`` (context-only violations caught, line-visible
  caught, clean threads with any false violation). Each is measured once, with models
  and thresholds fixed; the tests on a held-out set skip until its file is delivered
  into the data folder. Every target is computed, never hard-coded.

``build_corpus`` generates ``train.jsonl`` from the phrasebook and templates only, so it
stays disjoint from every labelled split; training never lists a blind set (test below).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from compliance_nlp import Analyzer
from compliance_nlp.training.evaluate import TARGETS, EvalReport, evaluate, read_jsonl
from compliance_nlp.training.threads import THREAD_TARGETS, ThreadReport, evaluate_threads

DATA = Path(__file__).resolve().parents[2] / "compliance_nlp" / "training" / "data"
# Held out: never trained on, never read while the models and rules were developed.
BLINDS = ("blind19.jsonl",)
BLIND_EVERYDAY = ("blind_everyday14.jsonl",)
BLIND_THREADS = ("blind_threads26.jsonl", "blind_threads27.jsonl")
# Line sets scored against the issue-3 targets (each has violating and clean lines).
DEV_SETS = tuple(
    f"dev{n}.jsonl"
    for n in ("", *range(2, 17), 19, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38, 40, 42, 44)
)
EVERYDAY_DEV = (
    "dev17.jsonl",
    "dev18.jsonl",
    "dev21.jsonl",
    "dev23.jsonl",
    "dev25.jsonl",
    "dev27.jsonl",
    "dev29.jsonl",
    "dev31.jsonl",
    "dev33.jsonl",
    "dev35.jsonl",
    "dev37.jsonl",
    "dev39.jsonl",
    "dev41.jsonl",
    "dev43.jsonl",
    "dev45.jsonl",
)
THREAD_DEV = tuple(f"threads_dev{n}.jsonl" for n in range(1, 29))
THREAD_FILES = (*THREAD_DEV, *BLIND_THREADS)
# issue 9: clean advisor lines flagged on the held-out line set (issue 3 asked ≤ 0.05).
BLIND_CLEAN_FLAGGED = 0.03


def _delivered(name: str) -> Path:
    """A held-out file's path; the test skips until the annotators' file is in place."""
    path = DATA / name
    if not path.is_file():
        pytest.skip(
            f"held-out {name} not delivered yet: it is copied into {DATA} only once the "
            "models and thresholds are frozen, then measured once"
        )
    return path


def _texts(name: str) -> set[str]:
    return {r["text"] for r in read_jsonl(DATA / name)}


@pytest.mark.parametrize("name", DEV_SETS)
def test_dev_sets_are_disjoint_from_training(name: str) -> None:
    assert not _texts("train.jsonl") & _texts(name)


@pytest.fixture(scope="module")
def dev_reports(analyzer: Analyzer) -> dict[str, EvalReport]:
    return {name: evaluate(read_jsonl(DATA / name), analyzer) for name in DEV_SETS}


# Dev targets not met (strict xfail: reaching one fails until it is removed here). The
# models are trained on the dev pool, so these figures are fitted: they guard against
# regressions only; the honest estimate is cross-validated (``crossval``). dev22 (blind7)
# joined the pool after the shipped line models were trained: its recall (0.888) met the
# target at 0.916 with rules for classes dev28 (blind10) missed too — a source inside
# the company, a threshold passed with money lent or advanced (its clean lines flagged
# fell to 0.034 with the cues that read refusals). dev24 (blind8) joined the same way:
# its clean lines flagged were 0.081 at its one measurement, 0.041 once the cues read a
# refusal inside the match, the rest of a sentence calling a claim a scam and a rumour
# called baseless. dev28's three gaps closed with rules for its classes (fitted on it),
# and dev30's (blind11) clean lines flagged, 0.072 at its one measurement, with the cues
# that read a claim called void, a warning to the end of the sentence and reported speech.
# dev36 (blind14) joined the pool with two targets missed at its one measurement: clean
# lines flagged 0.054 (3/56) and intent 0.809; both met once intent cues settle decisive
# phrasings (intents 2026.12-1) and MP-001 reads where principal protection is left.
# dev38 (blind15) joined the pool with two targets missed at its one measurement, each by
# one line: recall 0.898 (114/127) and intent 0.844 (119/141); both met once lexicon
# 2026.12-1.54 and intents 2026.12-3/-4 were written on its misses (fitted). dev40 (blind16)
# joined with clean lines flagged 0.076 (5/66) at its one measurement, 0.000 once rules
# and counter-evidence for a rule explained were written on its misses (fitted). dev42
# (blind17) joined with intent 0.793 (107/135) at its one measurement, 0.874 once intents
# 2026.12-5 added cues for its misses' classes (fitted). dev44 (blind18) joined with intent
# 0.790 at its one measurement.
DEV_GAPS: set[tuple[str, str]] = {
    ("dev44.jsonl", "intent_accuracy"),
}


@pytest.mark.parametrize("name", DEV_SETS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_dev_set_target(
    request: pytest.FixtureRequest, dev_reports: dict[str, EvalReport], name: str, target: str
) -> None:
    if (name, target) in DEV_GAPS:
        request.applymarker(
            pytest.mark.xfail(strict=True, reason="issue 3: dev target not met yet")
        )
    op, bound = TARGETS[target]
    value = dev_reports[name].metrics()[target]
    assert (value >= bound) if op == ">=" else (value <= bound), f"{name}: {target}={value:.3f}"


@pytest.mark.parametrize("name", EVERYDAY_DEV)
def test_everyday_dev_chat_is_left_alone(analyzer: Analyzer, name: str) -> None:
    """Issue 9's everyday target (at most 1 in 100 advisor lines flagged) on every everyday
    file of the pool: fitted, so a regression guard (dev43, blind_everyday12, had 4/239 at
    its one measurement; the figure that counts is the blind file's, below)."""
    report = evaluate(read_jsonl(DATA / name), analyzer)
    value = report.metrics()["clean_flagged_violation"]
    assert value <= 0.01, f"{name}: {value:.3f} {report.misses[:3]}"


def test_training_never_reads_a_blind_set() -> None:
    from compliance_nlp.training.train import DEV_POOL, TrainOptions

    assert tuple(DEV_POOL) == (*DEV_SETS, *EVERYDAY_DEV, *THREAD_DEV)
    assert all("blind" not in p.name for p in TrainOptions().dev_files)


@pytest.mark.parametrize("name", BLINDS)
def test_blind_is_disjoint_from_training(name: str) -> None:
    _delivered(name)
    assert not _texts("train.jsonl") & _texts(name)


_blind_reports: dict[str, EvalReport] = {}


def _blind_report(name: str, analyzer: Analyzer) -> EvalReport:
    path = _delivered(name)
    if name not in _blind_reports:
        _blind_reports[name] = evaluate(read_jsonl(path), analyzer)
    return _blind_reports[name]


@pytest.mark.parametrize("name", BLINDS)
@pytest.mark.parametrize("target", list(TARGETS))
def test_blind_heldout_target(
    request: pytest.FixtureRequest, analyzer: Analyzer, name: str, target: str
) -> None:
    """The issue-3 targets on each blind held-out set, computed from the shipped analysis."""
    if (name, target) in BLIND_GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason="not met at measurement"))
    op, bound = TARGETS[target]
    value = _blind_report(name, analyzer).metrics()[target]
    assert (value >= bound) if op == ">=" else (value <= bound), f"{name}: {target}={value:.3f}"


@pytest.mark.parametrize("name", BLINDS)
def test_blind_clean_advisor_lines_flagged(
    request: pytest.FixtureRequest, analyzer: Analyzer, name: str
) -> None:
    """Issue 9: clean advisor lines flagged as a violation fall to at most 3 in 100."""
    if "clean_lines" in CONTEXT_GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason="issue 9: not met yet"))
    report = _blind_report(name, analyzer)
    value = report.metrics()["clean_flagged_violation"]
    assert value <= BLIND_CLEAN_FLAGGED, f"{name}: {value:.3f} {report.misses[:5]}"


def test_crossval_holds_out_whole_files_and_reports_merge() -> None:
    from compliance_nlp.training.crossval import file_folds, merge_reports

    sizes = {name: sum(1 for _ in read_jsonl(DATA / name)) for name in DEV_SETS}
    folds = file_folds(sizes, 4)
    assert folds == file_folds(dict(reversed(sizes.items())), 4)  # order-independent
    assert set(folds.values()) == {0, 1, 2, 3}
    loads = [sum(n for name, n in sizes.items() if folds[name] == f) for f in range(4)]
    assert max(loads) - min(loads) <= max(sizes.values())  # balanced, whole files
    a, b = EvalReport(n=2, violating=1), EvalReport(n=3, clean=2)
    a.per_category["insider_tip"] = Counter(tp=1)
    b.per_category["insider_tip"] = Counter(fn=1)
    merged = merge_reports([a, b])
    assert (merged.n, merged.violating, merged.clean) == (5, 1, 2)
    assert merged.per_category["insider_tip"] == Counter(tp=1, fn=1)


LABELLED = sorted(p.name for p in DATA.glob("*.jsonl"))


@pytest.mark.parametrize("name", LABELLED)
def test_labelled_files_are_well_formed(name: str) -> None:
    """Every shipped label names the taxonomy and every PII span is a valid number."""
    from compliance_nlp.training.labels import check_labels

    errors, counts = check_labels(DATA / name, unique=name != "train.jsonl")
    assert errors == [], errors[:5]
    assert counts["advisor:clean"]
    if name in (*EVERYDAY_DEV, *BLIND_EVERYDAY):
        assert not counts["advisor:violating"]  # everyday chat is clean by definition
    else:
        assert counts["advisor:violating"]
    if name in THREAD_FILES:
        assert counts["violation:context_only"] and counts["violation:line_visible"]


def test_label_check_refuses_bad_labels(tmp_path: Path) -> None:
    from compliance_nlp.training.labels import check_labels

    bad = tmp_path / "bad.jsonl"
    rows = [
        {
            "id": "x1",
            "text": "身份证110101199003071234",
            "role": "customer",
            "intent": "chitchat",
            "sentiment": "neutral",
            "violations": [],
            "pii": [{"type": "id_card", "start": 3, "end": 21}],
        },
        {
            "id": "x1",
            "text": "稳赚",
            "role": "advisor",
            "intent": None,
            "sentiment": None,
            "violations": [{"category": "promise"}],
            "pii": [],
        },
        {
            "id": "x3",
            "text": "稳赚",
            "role": "customer",
            "intent": "buy",
            "sentiment": "neutral",
            "violations": [{"category": "guaranteed_return"}],
            "pii": [],
        },
    ]
    bad.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n{oops\n")
    errors, _ = check_labels(bad)
    text = "\n".join(errors)
    for expected in (
        "not a valid id_card",
        "duplicate id",
        "unknown category 'promise'",
        "duplicate text",
        "unknown intent 'buy'",
        "customer line with violations",
        "line 4: not JSON",
    ):
        assert expected in text


def _key(text: str) -> str:
    from compliance_nlp.normalize import normalize

    return normalize(text).text.replace(" ", "")


def test_no_hand_written_line_is_in_two_files() -> None:
    """Cross-validation holds out whole files and a blind set measures unseen lines: a
    line in a training file and another file would be trained on where it is measured
    (compared after normalisation: 穩賺 and 稳赚 are one line to the model)."""
    owner: dict[str, str] = {}
    shared: list[tuple[str, str, str]] = []
    for name in LABELLED:
        # Threads are compared as threads below: 「好的」 recurs in many of them.
        if name == "train.jsonl" or name in THREAD_FILES:
            continue
        for row in read_jsonl(DATA / name):
            key = _key(row["text"])
            first = owner.setdefault(key, name)
            # Two held-out sets may share a line (「好的谢谢」): neither trains.
            held_out = (*BLINDS, *BLIND_EVERYDAY)
            if first != name and not (first in held_out and name in held_out):
                shared.append((first, name, row["text"]))
    assert shared == []


@pytest.mark.parametrize("name", BLINDS)
def test_blind_shares_no_normalised_line_with_the_corpus(name: str) -> None:
    path = _delivered(name)
    train = {_key(r["text"]) for r in read_jsonl(DATA / "train.jsonl")}
    assert [r["text"] for r in read_jsonl(path) if _key(r["text"]) in train] == []


def test_blind_threads_share_no_advisor_line_with_training() -> None:
    """A blind thread measures lines no model was trained on (short replies such as
    「是的👌」 recur by design: their meaning is what the thread decides)."""
    from compliance_nlp.training.train import DEV_POOL, read_rows

    paths = [DATA / name for name in BLIND_THREADS if (DATA / name).is_file()]
    if not paths:
        _delivered(BLIND_THREADS[0])
    trained = {_key(r["text"]) for r in read_jsonl(DATA / "train.jsonl")}
    for name in DEV_POOL:
        trained |= {_key(r["text"]) for r in read_rows(DATA / name)}
    shared = [
        turn["text"]
        for path in paths
        for thread in read_jsonl(path)
        for turn in thread["turns"]
        if turn["role"] == "advisor" and len(turn["text"]) > 6 and _key(turn["text"]) in trained
    ]
    assert shared == []


# Issue 9 on the held-out everyday, thread and line sets (measured once, models fixed).
# A target listed here was not met at that measurement: strict xfail, so meeting it
# fails until it is removed (the figure is in the commit that records the measurement).
# The first held-out sets (now threads_dev3, dev18, dev19, dev20) missed
# context_only_recall, clean_threads_flagged, everyday and clean_lines.  The second
# (blind_threads2+3: 317 threads, blind_everyday2, blind7; now threads_dev5+6, dev23,
# dev22), measured once with the models
# of cdd2085d-s13: context-only caught 0.691 (>= 0.90), line-visible 0.980, clean
# threads flagged 0.056 (<= 0.04); everyday advisor lines flagged 0.013 (<= 0.01);
# blind7 recall 0.888 (>= 0.90), clean flagged 0.057 (<= 0.05, and <= 0.03 for issue 9),
# category 0.874, intent 0.880.
# The third (blind_threads4+5: 398 threads, blind_everyday3, blind8), measured once with
# the models of fa19f5e (violation and intent cdd2085d-s13, pair 0b4c6bd2-s13, lexicon
# 2026.12-1.5): context-only caught 0.710 (120/169, >= 0.90), line-visible 0.952, clean
# threads flagged 0.073 (13/178, <= 0.04); everyday advisor lines flagged 0.009 (2/219,
# met); blind8 recall 0.961, clean flagged 0.081 (<= 0.05, and <= 0.03 for issue 9),
# category 0.941, intent 0.899, PII recall 0.923 (one phone followed by 「天天」, a rules
# bug fixed after the measurement in 77037cd; 1.000 since). Those sets are now
# threads_dev7+8, dev25 and dev24.
# The fourth (blind_threads6+7: 398 threads, blind_everyday4, blind9), written by three
# new annotators and measured once with the models of 4210206 (violation and intent
# cdd2085d-s13, pair b1507322-s13, lexicon 2026.12-1.5 with the cues and anchors of
# d1be1e5): context-only caught 0.807 (134/166, >= 0.90), line-visible 0.938 (60/64,
# >= 0.95), clean threads flagged 0.078 (14/179, <= 0.04); everyday advisor lines
# flagged 0.019 (4/215, <= 0.01); blind9 recall 0.931, clean flagged 0.071 (<= 0.05, and
# <= 0.03 for issue 9), category 0.910, intent 0.956, PII recall 1.000. Those sets are now
# threads_dev9+10, dev27 and dev26.
# The fifth (blind_threads8+9: 399 threads, blind_everyday5, blind10), written by three
# new annotators and measured once with the models of c223c85 (intent 71374f6c-s13,
# violation cdd2085d-s13, pair cbc9c3a4-s13, lexicon 2026.12-1.13): context-only caught
# 0.751 (127/169, >= 0.90), line-visible 0.984 (62/63, met), clean threads flagged 0.068
# (12/177, <= 0.04); everyday advisor lines flagged 0.009 (2/226, met); blind10 recall
# 0.863 (>= 0.90), clean flagged 0.083 (<= 0.05, and <= 0.03 for issue 9), category
# 0.837 (>= 0.85), intent 0.888, PII recall 1.000. Those sets are now threads_dev11+12,
# dev29 and dev28.
# The sixth (blind_threads10+11: 399 threads, blind_everyday6, blind11), written by three
# new annotators and measured once with the models of 951de07 (intent 71374f6c-s13,
# violation cdd2085d-s13, pair e56a05b7-s13, lexicon 2026.12-1.14): context-only caught
# 0.842 (139/165, >= 0.90), line-visible 0.919 (57/62, >= 0.95), clean threads flagged
# 0.050 (9/179, <= 0.04); everyday advisor lines flagged 0.005 (1/218, met); blind11
# recall 0.908, clean flagged 0.072 (<= 0.05, and <= 0.03 for issue 9), category 0.902,
# intent 0.873, PII recall 1.000. After it one generated pair template that came close to a
# blind_threads10 line was reworded and the pair model retrained (61fa38e9-s13). Those sets
# are now threads_dev13+14, dev31 and dev30; the gaps below stay until the next held-out
# sets (blind_threads12+13, blind_everyday7, blind12) are measured.
# The seventh (blind_threads12+13: 399 threads, blind_everyday7, blind12), written by three
# new annotators and measured once with the models of 443a71a (intent 71374f6c-s13,
# violation 8dc4f2de-s13, pair 708a4b06-s13, lexicon 2026.12-1.30, dialogue 2026.12-9,
# anchors 2026.12-24): context-only caught 0.815 (137/168, >= 0.90), line-visible 0.937
# (59/63, >= 0.95), clean threads flagged 0.084 (15/179, <= 0.04; 13 of the false flags
# off_book_dealing); everyday advisor lines flagged 0.004 (1/223, met); blind12 recall
# 0.919, clean flagged 0.025 (2/80: met, and <= 0.03 for issue 9 met), category 0.906,
# intent 0.853, PII recall 1.000. Those sets are now threads_dev15+16, dev33 and dev32;
# After the measurement OB-003 stopped reading a bare 私聊 (a move from a group into a
# one-to-one WeCom chat, which is archived too) as off-book.
# The eighth (blind_threads14+15: 396 threads, blind_everyday8, blind13), written by three
# new annotators and measured once with the models of 09f931a (intent 71374f6c-s13,
# violation 8dc4f2de-s13, pair 39d4c0d5-s13, lexicon 2026.12-1.47, dialogue 2026.12-13):
# context-only caught 0.829 (145/175, >= 0.90), line-visible 0.952 (59/62, met), clean
# threads flagged 0.078 (14/179, <= 0.04; 6 of the false flags misleading_promotion);
# everyday advisor lines flagged 0.000 (0/203, met); blind13 recall 0.928, clean flagged
# 0.017 (1/60: met, and <= 0.03 for issue 9 met), category 0.928, intent 0.876, PII recall
# 1.000. Those sets are now threads_dev17+18, dev35 and dev34.
# The ninth (blind_threads16+17: 393 threads, blind_everyday9, blind14), written by three
# new annotators the same day and measured once with the models of f3cf5c0 (intent
# 71374f6c-s13, violation 8dc4f2de-s13, pair 4a1381b7-s13, lexicon 2026.12-1.51, dialogue
# 2026.12-17): context-only caught 0.845 (131/155, >= 0.90), line-visible 1.000 (59/59,
# met), clean threads flagged 0.067 (12/179, <= 0.04); everyday advisor lines flagged 0.000
# (0/186, met); blind14 recall 0.929, clean flagged 0.054 (3/56: <= 0.05 and <= 0.03 for
# issue 9 missed), category 0.921, intent 0.809 (>= 0.85 missed; the intent model is
# unchanged since 71374f6c), PII recall 1.000. Those sets are now threads_dev19+20, dev37
# and dev36.
# The tenth (blind_threads18+19: 393 threads, blind_everyday10, blind15), written by three
# new annotators the same day and measured once with the models of 6d97240 (intent
# 71374f6c-s13 with the decisive intent cues of intents 2026.12-2, violation 8dc4f2de-s13,
# pair d8c45dd5-s13, lexicon 2026.12-1.52, dialogue 2026.12-21, stance 2026.12-8, anchors
# 2026.12-33): context-only caught 0.920 (160/174, met), line-visible 0.968 (61/63, met),
# clean threads flagged 0.056 (10/178, <= 0.04 missed); everyday advisor lines flagged 0.009
# (2/218, met); blind15 recall 0.898 (114/127, >= 0.90 missed by one line), clean flagged
# 0.000 (0/61: met, and <= 0.03 for issue 9 met), category 0.874, intent 0.844 (119/141,
# >= 0.85 missed by one line), PII recall 1.000. Those sets are now threads_dev21+22, dev39
# and dev38.
# The eleventh (blind_threads20+21: 389 threads, blind_everyday11, blind16), written by
# three new annotators the same day and measured once with the models of 0747dcf (intent
# 71374f6c-s13 with intents 2026.12-4, violation 8dc4f2de-s13, pair e5cb3a05-s13, lexicon
# 2026.12-1.54, dialogue 2026.12-25, cues 2026.12-17, anchors 2026.12-34): context-only
# caught 0.960 (145/151, met), line-visible 1.000 (61/61, met), clean threads flagged 0.067
# (12/178, <= 0.04 missed); everyday advisor lines flagged 0.005 (1/220, met); blind16
# recall 0.937 (met), clean flagged 0.076 (5/66: <= 0.05 and <= 0.03 missed; hard negatives
# stating a rule — 经营贷不能用于买房, 封闭期中途不能取, 飞单就是…), category 0.929, intent
# 0.864 (met), PII recall 1.000. Those sets are now threads_dev23+24, dev41 and dev40.
# The twelfth (blind_threads22+23: 388 threads, blind_everyday12, blind17), written by three
# new annotators the same day and measured once with the models of b3d97fc (intent
# 71374f6c-s13 with intents 2026.12-4, violation 8dc4f2de-s13, pair 8010ff0e-s13, lexicon
# 2026.12-1.58, dialogue 2026.12-28, cues 2026.12-18, anchors 2026.12-36): context-only
# caught 0.940 (141/150, met), line-visible 0.983 (59/60, met), clean threads flagged 0.033
# (6/180, met for the first time); everyday advisor lines flagged 0.017 (4/239, <= 0.01
# missed: the violation model on lines naming a payment, a deposit or a ticket); blind17
# recall 0.922 (met), clean flagged 0.017 (1/59: met, and <= 0.03 for issue 9 met), category
# 0.922 (met), intent 0.793 (107/135, missed), PII recall 1.000. Those sets are now
# threads_dev25+26, dev43 and dev42.
# The thirteenth (blind_threads24+25: 392 threads, blind_everyday13, blind18), written by
# three new annotators the same day and measured once with the models of 844d82a (intent
# 71374f6c-s13 with intents 2026.12-5, violation 8dc4f2de-s13, pair 3e9b5a58-s13, lexicon
# 2026.12-1.58, anchors 2026.12-37): context-only caught 0.910 (152/167, met), line-visible
# 0.952 (59/62, met), clean threads flagged 0.051 (9/178, <= 0.04 missed); everyday advisor
# lines flagged 0.000 (0/191, met); blind18 recall 0.946 (met), clean flagged 0.049 (3/61:
# <= 0.05 met, <= 0.03 for issue 9 missed), category 0.946 (met), intent 0.790 (missed), PII
# recall 1.000. Those sets are now threads_dev27+28, dev45 and dev44; the gaps below stay
# until the next held-out sets (blind_threads26+27, blind_everyday14, blind19) are measured.
CONTEXT_GAPS: set[str] = {
    "clean_threads_flagged",
    "clean_lines",
}
# Line-level issue-3 targets missed on a blind set at its one measurement (same rule).
BLIND_GAPS: set[tuple[str, str]] = {
    ("blind19.jsonl", "intent_accuracy"),
}


def _blind_threads(analyzer: Analyzer) -> ThreadReport:
    """Both held-out thread sets pooled (two annotators' conversations)."""
    for name in BLIND_THREADS:
        _delivered(name)
    threads = [t for name in BLIND_THREADS for t in read_jsonl(DATA / name)]
    return evaluate_threads(threads, analyzer)


@pytest.fixture(scope="module")
def blind_thread_report(analyzer: Analyzer) -> ThreadReport:
    return _blind_threads(analyzer)


@pytest.mark.parametrize("target", list(THREAD_TARGETS))
def test_blind_thread_target(
    request: pytest.FixtureRequest, blind_thread_report: ThreadReport, target: str
) -> None:
    """Context-only violations caught, line-visible caught, clean threads left alone."""
    if target in CONTEXT_GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason="issue 9: not met yet"))
    op, bound = THREAD_TARGETS[target]
    value = blind_thread_report.metrics()[target]
    assert (value >= bound) if op == ">=" else (value <= bound), f"{target}={value:.3f}"


def test_blind_everyday_advisor_lines_are_left_alone(
    request: pytest.FixtureRequest, analyzer: Analyzer
) -> None:
    """At most 1 in 100 everyday advisor lines (greetings, logistics, wishes) flagged."""
    path = _delivered(BLIND_EVERYDAY[0])
    if "everyday" in CONTEXT_GAPS:
        request.applymarker(pytest.mark.xfail(strict=True, reason="issue 9: not met yet"))
    report = evaluate(read_jsonl(path), analyzer)
    assert report.clean >= 100  # after dropping lines another file has (dev21 kept 153 of 255)
    assert report.metrics()["clean_flagged_violation"] <= 0.01, report.misses[:5]

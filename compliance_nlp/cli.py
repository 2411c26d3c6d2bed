"""``siyu nlp analyze | train | eval``: registered into the ``siyu`` console script.

``analyze`` streams: it reads stdin line by line and writes each result as soon as its
batch is done, so 100k lines never sit in memory. A bad line yields an error object on
its own output line (with the input's id when one could be read), never a crash.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from compliance_nlp.types import AnalysisError, AnalyzerConfig, Turn

if TYPE_CHECKING:
    from compliance_nlp.training.evaluate import EvalReport

__all__ = ["register"]

_BATCH = 256


def register(subparsers: Any, config_factory: Callable[[], AnalyzerConfig]) -> None:
    """Add ``nlp`` with its sub-commands to an argparse ``subparsers`` object."""
    from compliance_nlp.training.train import TrainOptions  # defaults shown in --help

    nlp = subparsers.add_parser("nlp", help="compliance NLP: analyze, train, export, eval")
    sub = nlp.add_subparsers(dest="nlp_command", required=True)

    p_an = sub.add_parser(
        "analyze",
        help="JSONL {id,text,role[,context]} on stdin -> analysis JSONL on stdout",
        description=(
            'Each input line: {"id": …, "text": "…", "role": "advisor"|"customer"}, '
            'optionally with "context": [{"role": "customer"|"advisor", "text": "…"}, …] '
            "(the earlier messages of the conversation, oldest first): an advisor line is "
            "then judged as the answer to the customer turn before it. A bad line is "
            'answered with {"id", "line", "error"} and the rest go on.'
        ),
    )
    p_an.add_argument("--no-model", action="store_true", help="rules and keywords only")
    p_an.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p_an.set_defaults(func=lambda a: _cmd_analyze(a, config_factory, sys.stdin, sys.stdout))

    p_tr = sub.add_parser("train", help="train the intent and violation models (seeded)")
    p_tr.add_argument(
        "--output-dir", type=Path, default=None, help="default: the shipped models dir"
    )
    p_tr.add_argument("--train-file", type=Path, default=None)
    p_tr.add_argument(
        "--heldout-file",
        type=Path,
        default=None,
        help="labelled set scored after training (the dev pool is trained on; default: none)",
    )
    p_tr.add_argument("--seed", type=int, default=13)
    p_tr.add_argument("--epochs", type=int, default=TrainOptions.epochs)
    p_tr.add_argument(
        "--ensemble",
        type=int,
        default=TrainOptions.ensemble,
        help="members per model (seeds seed, seed+1, …; probabilities averaged)",
    )
    p_tr.add_argument("--dev-weight", type=int, default=TrainOptions.dev_weight)
    p_tr.add_argument(
        "--kinds",
        default=",".join(TrainOptions.kinds),
        help="models to train, comma-separated (intent, violation, pair); default: all",
    )
    p_tr.add_argument(
        "--max-steps", type=int, default=0, help="cap optimisation steps (smoke runs)"
    )
    p_tr.set_defaults(func=lambda a: _cmd_train(a, config_factory))

    p_ex = sub.add_parser(
        "export",
        help="write model.onnx beside a transformers checkpoint (needs siyu[train])",
        description=(
            "Export each model directory (or each member of an ensemble directory) to "
            "model.onnx, checked against the checkpoint before it is written; analysis "
            "then runs it with onnxruntime, without torch. `siyu nlp train` exports the "
            "models it trains; a bank's own fine-tuned checkpoint is exported with this."
        ),
    )
    p_ex.add_argument("dirs", type=Path, nargs="+", metavar="DIR", help="model directory")
    p_ex.set_defaults(func=_cmd_export)

    p_ev = sub.add_parser(
        "eval",
        help="precision/recall per category, intent accuracy, PII check; thread files: "
        "context-only and line-visible recall, clean threads flagged",
    )
    p_ev.add_argument(
        "file",
        type=Path,
        nargs="+",
        help="labelled JSONL: lines (e.g. compliance_nlp/training/data/dev2.jsonl) or "
        "threads (e.g. compliance_nlp/training/data/threads_dev1.jsonl); several files of "
        "one kind are pooled into one report",
    )
    p_ev.add_argument("--no-model", action="store_true")
    p_ev.add_argument("--show-misses", action="store_true")
    p_ev.set_defaults(func=lambda a: _cmd_eval(a, config_factory))


def _config(args: argparse.Namespace, factory: Callable[[], AnalyzerConfig]) -> AnalyzerConfig:
    from dataclasses import replace

    config = factory()
    if getattr(args, "no_model", False):
        config = replace(config, use_model=False)
    return config


def _error_line(line_no: int, item_id: object, message: str) -> str:
    return json.dumps({"id": item_id, "line": line_no, "error": message}, ensure_ascii=False)


def _cmd_analyze(
    args: argparse.Namespace,
    factory: Callable[[], AnalyzerConfig],
    stdin: TextIO,
    stdout: TextIO,
) -> int:
    from tqdm import tqdm

    from compliance_nlp.analyze import get_analyzer, validate_input

    analyzer = get_analyzer(_config(args, factory))
    progress = tqdm(unit=" msg", file=sys.stderr, disable=args.no_progress, mininterval=0.5)
    # Entries are (line_no, id, text, role, context) to analyse, or (line_no, id, error)
    # to echo.
    pending: list[tuple[Any, ...]] = []
    errors = 0

    def flush() -> None:
        good = [p for p in pending if len(p) == 5]
        results = (
            iter(analyzer.analyze_many([(p[2], p[3]) for p in good], [p[4] for p in good]))
            if good
            else iter(())
        )
        for p in pending:
            if len(p) == 5:
                out = {"id": p[1], **next(results).to_dict()}
                stdout.write(json.dumps(out, ensure_ascii=False) + "\n")
            else:
                stdout.write(_error_line(p[0], p[1], p[2]) + "\n")
        stdout.flush()
        progress.update(len(pending))
        pending.clear()

    for line_no, line in enumerate(_lines(stdin), start=1):
        if not line.strip():
            continue
        item_id: object = None
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise AnalysisError("each line must be a JSON object")
            item_id = obj.get("id")
            text, role = validate_input(
                obj.get("text"), obj.get("role"), max_chars=analyzer.config.max_chars
            )
            pending.append((line_no, item_id, text, role, _context(obj.get("context"))))
        except (ValueError, AnalysisError) as exc:  # JSONDecodeError is a ValueError
            errors += 1
            pending.append((line_no, item_id, str(exc)))
        if len(pending) >= _BATCH:
            flush()
    if pending:
        flush()
    progress.close()
    if errors:
        print(f"{errors} line(s) rejected; see their error objects", file=sys.stderr)
    return 0


def _context(value: object) -> tuple[Turn, ...] | None:
    """The optional ``context`` field: earlier turns, oldest first (a clear error if bad)."""
    if value is None:
        return None
    if not isinstance(value, list):
        raise AnalysisError("context must be a list of {role, text} objects")
    return tuple(Turn.parse(t) for t in value)


def _lines(stream: TextIO) -> Iterator[str]:
    """Lines of stdin; undecodable bytes become U+FFFD instead of killing the run."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        yield from stream
        return
    for raw in buffer:
        yield raw.decode("utf-8", errors="replace")


def _cmd_train(args: argparse.Namespace, factory: Callable[[], AnalyzerConfig]) -> int:
    import time
    from dataclasses import replace

    from compliance_nlp.analyze import Analyzer
    from compliance_nlp.training.evaluate import evaluate, read_jsonl
    from compliance_nlp.training.train import TrainOptions, train_all

    options = TrainOptions(
        seed=args.seed,
        epochs=args.epochs,
        max_steps=args.max_steps,
        ensemble=args.ensemble,
        dev_weight=args.dev_weight,
    )
    kinds = tuple(k.strip() for k in args.kinds.split(",") if k.strip())
    unknown = [k for k in kinds if k not in TrainOptions.kinds]
    if unknown or not kinds:
        print(
            f"unknown model kind: {', '.join(unknown) or '(none)'}; "
            f"choose from {', '.join(TrainOptions.kinds)}",
            file=sys.stderr,
        )
        return 2
    options = replace(options, kinds=kinds)
    if args.output_dir is not None:
        options = replace(options, output_dir=args.output_dir)
    if args.train_file is not None:
        options = replace(options, train_file=args.train_file)
    if args.heldout_file is not None:
        options = replace(options, heldout_file=args.heldout_file)
    missing = [str(p) for p in (options.train_file, *options.dev_files) if not p.is_file()]
    if missing:
        # An installed siyu carries no training data (pyproject.toml leaves it out):
        # say so instead of a traceback, before anything is written.
        print(
            f"missing training data: {', '.join(missing)}. The corpus and the development "
            "pool are in a source checkout (compliance_nlp/training/data/); an installed "
            "package carries neither.",
            file=sys.stderr,
        )
        return 2
    started = time.monotonic()
    results = train_all(options)
    for kind, figures in results.items():
        print(
            f"{kind}: train accuracy {figures['train_accuracy']:.3f} "
            f"after {int(figures['steps'])} steps"
            f" -> {options.output_dir / kind}"
        )
    print(f"trained in {time.monotonic() - started:.0f}s (seed {options.seed})")
    if options.heldout_file is not None and options.heldout_file.is_file():
        config = replace(
            factory(),
            use_model=True,
            intent_model_dir=str(options.output_dir / "intent"),
            violation_model_dir=str(options.output_dir / "violation"),
        )
        report = evaluate(read_jsonl(options.heldout_file), Analyzer(config))
        print(f"metrics on {options.heldout_file} (optimistic if it is in the dev pool):")
        print(report.render())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    try:
        import torch  # noqa: F401  # only to say what is missing before any work
        import transformers  # noqa: F401
    except ImportError:
        print(
            "siyu nlp export needs torch and transformers: pip install 'siyu[train]'",
            file=sys.stderr,
        )
        return 2
    from compliance_nlp.training.export import ExportError, export_onnx

    for directory in args.dirs:
        try:
            written = export_onnx(directory)
        except ExportError as exc:
            print(f"cannot export {directory}: {exc}", file=sys.stderr)
            return 2
        for path in written:
            print(f"wrote {path}")
    return 0


def _cmd_eval(args: argparse.Namespace, factory: Callable[[], AnalyzerConfig]) -> int:
    from compliance_nlp.analyze import Analyzer
    from compliance_nlp.training.evaluate import evaluate, read_jsonl
    from compliance_nlp.training.threads import ThreadReport, evaluate_threads, is_thread

    missing = [str(f) for f in args.file if not f.is_file()]
    if missing:
        print(f"no such file: {', '.join(missing)}", file=sys.stderr)
        return 2
    analyzer = Analyzer(_config(args, factory))
    rows: list[dict[str, Any]] = []
    kinds: set[bool] = set()
    try:
        for path in args.file:
            part = list(read_jsonl(path))
            kinds.add(bool(part) and all(is_thread(r) for r in part))
            rows += part
        if len(kinds) > 1:
            print("thread files and line files cannot be pooled: eval them apart", file=sys.stderr)
            return 2
        report: EvalReport | ThreadReport
        if rows and all(is_thread(r) for r in rows):
            report = evaluate_threads(rows, analyzer)
        else:
            report = evaluate(rows, analyzer)
    except (ValueError, KeyError) as exc:
        names = ", ".join(str(f) for f in args.file)
        print(f"bad labelled file {names}: {exc}", file=sys.stderr)
        return 2
    print(f"model: {analyzer.model_version}")
    print(report.render())
    if args.show_misses:
        for miss in report.misses:
            print(json.dumps(miss, ensure_ascii=False))
    return 0 if not report.failed_targets() else 1

"""``siyu review export-labels``: reviewers' decisions as labelled data for compliance_nlp.

False positives and confirmed findings feed the next model (``siyu nlp train``): the
output is compliance_nlp's labelled JSONL (training/data/ANNOTATION.md), masked text
only.  Audited with the system actor ``cli``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from zoneinfo import ZoneInfo

from admin import review
from admin.cli import _cli_actor, _fail, _run_db
from core.cli import Subparsers
from core.domain import CliContext

SHANGHAI = ZoneInfo("Asia/Shanghai")


def parse_day(text: str) -> datetime:
    """YYYY-MM-DD, a day in Asia/Shanghai (the reviewers' calendar) → its start."""
    try:
        return datetime.strptime(text, "%Y-%m-%d").replace(tzinfo=SHANGHAI)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a date YYYY-MM-DD") from None


def cmd_export_labels(args: argparse.Namespace, ctx: CliContext) -> int:
    since: datetime = args.since
    # --until is inclusive (the whole day), as a reviewer says "up to the 30th".
    until: datetime | None = args.until + timedelta(days=1) if args.until else None
    if until is not None and until <= since:
        return _fail("--until is before --since")

    lines = _run_db(
        ctx,
        lambda: review.do_export_labels(actor=_cli_actor(), source="cli", since=since, until=until),
    )
    text = "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    if args.out:
        Path(args.out).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    confirmed = sum(1 for line in lines if line["violations"])
    print(
        f"exported {len(lines)} labelled lines ({confirmed} confirmed, "
        f"{len(lines) - confirmed} false positives)",
        file=sys.stderr,
    )
    return 0


def register(sub: Subparsers[argparse.ArgumentParser], ctx: CliContext) -> None:
    sp = sub.add_parser("review", help="the compliance review queue: export-labels")
    rsub = sp.add_subparsers(dest="review_command", required=True)
    e = rsub.add_parser(
        "export-labels",
        help="decided cases as labelled JSONL for compliance_nlp training (masked text only)",
    )
    e.add_argument(
        "--since", required=True, type=parse_day, help="first decision day, YYYY-MM-DD (北京时间)"
    )
    e.add_argument("--until", type=parse_day, help="last decision day, inclusive (default: today)")
    e.add_argument("--out", help="write to this file instead of standard output")
    e.set_defaults(func=partial(cmd_export_labels, ctx=ctx))

"""Where the labelled data lives and which files training reads as its development pool
(one place for training, cross-validation and the pair model's trainer)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# The hand-written development pool; blind sets are deliberately not listed. Line sets
# first (dev19, dev20 and dev22 were the blind5/blind6/blind7 held-out sets), then
# everyday advisor chat (dev17, dev18, dev21, dev23: greetings, logistics, wishes; dev23
# was blind_everyday2), then conversations labelled in context
# (``data/ANNOTATION_THREADS.md``; threads_dev3 was blind_threads1, threads_dev5 and
# threads_dev6 were blind_threads2 and blind_threads3).
DEV_POOL = (
    *(f"dev{n}.jsonl" for n in ("", *range(2, 17), 19, 20, 22)),
    "dev17.jsonl",
    "dev18.jsonl",
    "dev21.jsonl",
    "dev23.jsonl",
    *(f"threads_dev{n}.jsonl" for n in range(1, 7)),
)

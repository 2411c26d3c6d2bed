"""Where the labelled data lives and which files training reads as its development pool
(one place for training, cross-validation and the pair model's trainer)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# The hand-written development pool; blind sets are deliberately not listed. Line sets
# first (dev19, dev20, dev22 and dev24 were the blind5/blind6/blind7/blind8 held-out
# sets), then everyday advisor chat (dev17, dev18, dev21, dev23, dev25: greetings,
# logistics, wishes; dev23 and dev25 were blind_everyday2 and blind_everyday3), then
# conversations labelled in context (``data/ANNOTATION_THREADS.md``; threads_dev3 was
# blind_threads1, threads_dev5 … threads_dev8 were blind_threads2 … blind_threads5).
DEV_POOL = (
    *(f"dev{n}.jsonl" for n in ("", *range(2, 17), 19, 20, 22, 24)),
    "dev17.jsonl",
    "dev18.jsonl",
    "dev21.jsonl",
    "dev23.jsonl",
    "dev25.jsonl",
    *(f"threads_dev{n}.jsonl" for n in range(1, 9)),
)

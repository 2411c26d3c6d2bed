"""Where the labelled data lives and which files training reads as its development pool
(one place for training, cross-validation and the pair model's trainer)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# The hand-written development pool; blind sets are deliberately not listed. Line sets
# first (dev19, dev20 and the even dev22 … dev44 were the blind5 … blind18 held-out sets),
# then everyday advisor chat (dev17, dev18 and the odd dev21 … dev45: greetings, logistics,
# wishes; dev23 … dev45 were blind_everyday2 … blind_everyday13), then conversations
# labelled in context (``data/ANNOTATION_THREADS.md``; threads_dev3 was blind_threads1,
# threads_dev5 … threads_dev28 were blind_threads2 … blind_threads25).
DEV_POOL = (
    *(f"dev{n}.jsonl" for n in ("", *range(2, 17), 19, 20, *range(22, 45, 2))),
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
    *(f"threads_dev{n}.jsonl" for n in range(1, 29)),
)

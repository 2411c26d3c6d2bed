"""Where the labelled data lives and which files training reads as its development pool
(one place for training, cross-validation and the pair model's trainer)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# The hand-written development pool; blind sets are deliberately not listed. Line sets
# first (dev19, dev20 and the even dev22 … dev42 were the blind5 … blind17 held-out sets),
# then everyday advisor chat (dev17, dev18 and the odd dev21 … dev43: greetings, logistics,
# wishes; dev23 … dev43 were blind_everyday2 … blind_everyday12), then conversations
# labelled in context (``data/ANNOTATION_THREADS.md``; threads_dev3 was blind_threads1,
# threads_dev5 … threads_dev26 were blind_threads2 … blind_threads23).
DEV_POOL = (
    *(f"dev{n}.jsonl" for n in ("", *range(2, 17), 19, 20, *range(22, 43, 2))),
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
    *(f"threads_dev{n}.jsonl" for n in range(1, 27)),
)

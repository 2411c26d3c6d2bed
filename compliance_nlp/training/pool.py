"""Where the labelled data lives and which files training reads as its development pool
(one place for training, cross-validation and the pair model's trainer)."""

from __future__ import annotations

from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"
# The hand-written development pool; blind sets are deliberately not listed. Line sets
# first (dev19, dev20, dev22, dev24, dev26, dev28, dev30, dev32, dev34, dev36 and dev38 were
# the blind5 … blind15 held-out sets), then everyday advisor chat (dev17, dev18, dev21, dev23,
# dev25, dev27, dev29, dev31, dev33, dev35, dev37, dev39: greetings, logistics, wishes; dev23
# … dev39 were blind_everyday2 … blind_everyday10), then conversations labelled in context
# (``data/ANNOTATION_THREADS.md``; threads_dev3 was blind_threads1, threads_dev5 …
# threads_dev22 were blind_threads2 … blind_threads19).
DEV_POOL = (
    *(f"dev{n}.jsonl" for n in ("", *range(2, 17), 19, 20, 22, 24, 26, 28, 30, 32, 34, 36, 38)),
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
    *(f"threads_dev{n}.jsonl" for n in range(1, 23)),
)

"""What a base install weighs: a fresh venv, ``pip install .`` (what ``make run`` installs).

    .venv/bin/python bench/size.py [--venv var/size-venv] [--extra train] [--keep]

Printed: the seconds pip took, the venv's size on disk, the largest installed
distributions, and whether torch, transformers, playwright, mypy or ruff came along
(issue 14: the base install carries none of them; target <= 400 MB). The venv is made
from the interpreter running this script and removed afterwards unless ``--keep``.
pip reads the machine's usual index configuration; figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "transformers", "playwright", "mypy", "ruff", "nvidia-cublas-cu12")


def tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--venv", type=Path, default=ROOT / "var" / "size-venv")
    parser.add_argument("--extra", default="", help="an extra to add, e.g. train")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    venv: Path = args.venv
    shutil.rmtree(venv, ignore_errors=True)
    venv.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    target = f".[{args.extra}]" if args.extra else "."
    # A build directory under the venv: the work tree stays as it is.
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--quiet", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    if installed.returncode != 0:
        sys.exit(f"pip install {target} failed:\n{installed.stderr[-3000:]}")
    elapsed = time.perf_counter() - started
    listed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format", "json"],
        check=True,
        capture_output=True,
        text=True,
    )
    names = {d["name"].lower() for d in json.loads(listed.stdout)}
    site = next((venv / "lib").glob("python3*/site-packages"))
    sizes: dict[str, int] = {}
    for child in site.iterdir():
        key = child.name.split("-")[0].split(".")[0].lower()
        size = tree_size(child) if child.is_dir() else child.stat().st_size
        sizes[key] = sizes.get(key, 0) + size
    total = tree_size(venv)

    print(f"install: pip install {target} into a fresh venv in {elapsed:.0f} s")
    print(f"venv on disk: {total / 2**20:.0f} MB   (target <= 400 MB)")
    print("largest in site-packages:")
    for key, size in sorted(sizes.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {key:28s} {size / 2**20:7.1f} MB")
    came = [h for h in HEAVY if h in names]
    print(f"heavy packages installed: {', '.join(came) if came else 'none'}")
    if not args.keep:
        shutil.rmtree(venv, ignore_errors=True)


if __name__ == "__main__":
    main()

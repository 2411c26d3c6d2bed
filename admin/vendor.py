"""Third-party browser assets, vendored from their npm packages: ``python -m admin.vendor``.

Banks run consoles without internet access, so nothing is loaded from a CDN.  Each
asset is taken from its registry package (``npm pack name@version``), its tarball's
integrity and the file's SHA-256 recorded in ``admin/static/vendor/vendor.json``.
``make vendor`` runs this module to refresh them; ``--check`` (the test suite's way)
only verifies that each file still has its recorded hash.

To add an asset (ECharts, an OpenAPI renderer, the WeCom JS-SDK), add an entry to
``vendor.json`` with ``package``, ``version``, ``source`` (path inside the package) and
``file`` (path under ``admin/static/vendor``), then run ``make vendor`` (or ``python -m admin.vendor
--only NAME`` to fetch that one entry and leave the others untouched).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

VENDOR_DIR = Path(__file__).parent / "static" / "vendor"
MANIFEST = VENDOR_DIR / "vendor.json"


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_manifest() -> dict[str, dict[str, str]]:
    data = json.loads(MANIFEST.read_text("utf-8"))
    return {k: v for k, v in data.items() if not k.startswith("_")}


def check() -> list[str]:
    """Assets whose file is missing or differs from its recorded hash."""
    problems = []
    for name, entry in load_manifest().items():
        path = VENDOR_DIR / entry["file"]
        if not path.exists():
            problems.append(f"{name}: {entry['file']} is missing")
        elif sha256_of(path) != entry["sha256"]:
            problems.append(f"{name}: {entry['file']} does not match its recorded sha256")
    return problems


def refresh(only: str = "") -> None:
    """Fetch each pinned package (or the ``only`` one) with ``npm pack`` and copy the
    named file out of it."""
    raw = json.loads(MANIFEST.read_text("utf-8"))
    entries = load_manifest()
    if only and only not in entries:
        raise SystemExit(f"{only}: no such entry in {MANIFEST.name}")
    for name, entry in entries.items():
        if only and name != only:
            continue
        spec = f"{entry['package']}@{entry['version']}"
        with tempfile.TemporaryDirectory() as tmp:
            out = subprocess.run(  # noqa: S603 - fixed argv, the spec comes from our manifest
                ["npm", "pack", spec, "--json"],  # noqa: S607 - npm from PATH, as `make vendor` runs it
                cwd=tmp,
                check=True,
                capture_output=True,
                text=True,
            )
            packed = json.loads(out.stdout)[0]
            with tarfile.open(Path(tmp) / packed["filename"]) as tar:
                member = tar.extractfile(f"package/{entry['source']}")
                if member is None:
                    raise SystemExit(f"{spec}: {entry['source']} not in the package")
                data = member.read()
        target = VENDOR_DIR / entry["file"]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        raw[name].update(
            {
                "integrity": packed["integrity"],
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
        print(f"{name}: {spec} → {entry['file']} ({len(data)} bytes)")
    MANIFEST.write_text(json.dumps(raw, indent=2, ensure_ascii=False) + "\n", "utf-8")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="verify hashes only (no network)")
    parser.add_argument("--only", default="", help="refresh this entry alone")
    args = parser.parse_args()
    if args.check:
        problems = check()
        for p in problems:
            print(p, file=sys.stderr)
        return 1 if problems else 0
    refresh(args.only)
    return 0


if __name__ == "__main__":
    sys.exit(main())

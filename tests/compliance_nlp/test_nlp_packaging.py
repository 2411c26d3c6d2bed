"""What an installed siyu carries of compliance_nlp: what analysis needs, no training data.

The wheel is built from a copy of the source (nothing is written into the work tree) with
the project's own pyproject.toml, then unpacked and used from a fresh interpreter.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NLP = ROOT / "compliance_nlp"


def _copy_sources(target: Path) -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    include = project["tool"]["setuptools"]["packages"]["find"]["include"]
    target.mkdir()
    for path in ROOT.iterdir():
        if (path / "__init__.py").is_file() and any(fnmatch(path.name, p) for p in include):
            shutil.copytree(path, target / path.name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, target / name)
    # A work tree that once ran an editable install or an sdist keeps an egg-info whose
    # SOURCES.txt lists every file, the training data included; setuptools reads it back
    # as package data. The exclusion must hold against that too.
    egg = target / "siyu.egg-info"
    egg.mkdir()
    listed = sorted(
        str(p.relative_to(target)) for p in (target / "compliance_nlp").rglob("*") if p.is_file()
    )
    (egg / "SOURCES.txt").write_text("\n".join(listed) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel")
    src, dist = base / "src", base / "dist"
    _copy_sources(src)
    build = "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))"
    out = subprocess.run(
        [sys.executable, "-c", build, str(dist)],
        cwd=src,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return dist / out.stdout.strip().splitlines()[-1]


def _runtime_data() -> list[str]:
    """Every file analysis reads: the rule data and the shipped models."""
    files = [*(NLP / "rules").glob("*.json"), *(NLP / "rules").glob("*.txt")]
    files += [p for p in (NLP / "models").rglob("*") if p.is_file() and "/." not in str(p)]
    return sorted(str(p.relative_to(ROOT)) for p in files)


def test_wheel_carries_rules_and_models_but_no_training_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    runtime = _runtime_data()
    assert any(n.endswith("model.safetensors") for n in runtime)
    assert [n for n in runtime if n not in names] == []
    training_data = sorted(
        n
        for n in names
        if n.startswith(("compliance_nlp/training/data/", "compliance_nlp/training/phrases/"))
        or n.endswith(".jsonl")
    )
    assert training_data == []
    # The training code itself ships: ``siyu nlp eval`` scores a bank's own sample.
    assert {"compliance_nlp/training/evaluate.py", "compliance_nlp/labels.py"} <= names


_ANALYZE = """
import json, sys
import compliance_nlp
from compliance_nlp import analyze
assert compliance_nlp.__file__.startswith(sys.argv[1]), compliance_nlp.__file__
advisor = analyze("这款保本保息，加我VX详聊，电话13812345678", "advisor")
customer = analyze("我想把这款理财赎回", "customer")
print(json.dumps({
    "violations": sorted({f.category for f in advisor.violations}),
    "masked": advisor.masked_text,
    "intent": customer.intent,
    "model": advisor.model_version,
}, ensure_ascii=False))
"""


def test_installed_package_analyses_with_its_shipped_models(wheel: Path, tmp_path: Path) -> None:
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    out = subprocess.run(
        [sys.executable, "-c", _ANALYZE, str(site)],
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"guaranteed_return", "off_book_dealing"} <= set(result["violations"])
    assert result["masked"].endswith("138****5678")
    assert result["intent"] == "redemption_intent"
    assert "intent siyu-intent-charbert" in result["model"]
    assert "pair siyu-pair-logreg" in result["model"]  # models/pair/pair.npz ships too

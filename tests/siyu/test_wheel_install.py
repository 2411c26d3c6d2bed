"""The wheel ``python -m build`` makes installs and runs without the training stack.

Built from a copy of the sources (nothing is written into the work tree), installed
with ``pip install --no-deps`` into a fresh venv. The dependencies cannot be fetched
here, so the fresh venv reads them from the project venv's site-packages through a
``.pth`` line — after its own, so the installed wheel, not the work tree, is what
runs — and the same ``.pth`` makes torch, transformers and playwright unimportable, as
on a base install that never had them. Then ``siyu --help``, ``siyu migrate`` and
``siyu nlp analyze`` run from the venv's own console script.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("siyu", "core", "bot", "tagging", "sop", "admin", "compliance_nlp")
# A base install has none of these: the models run with onnxruntime.
ABSENT = ("torch", "transformers", "playwright")


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("wheel-install")
    src, dist, env_dir = base / "src", base / "dist", base / "venv"
    src.mkdir()
    for name in PACKAGES:
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
        shutil.copytree(ROOT / name, src / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    # --no-isolation: the build backend comes from this venv (no download).
    built = _run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", str(dist)],
        cwd=src,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("siyu-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "compliance_nlp/models/violation/model.onnx" in names
    assert not [n for n in names if n.endswith(".jsonl")]  # no training data

    made = _run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)])
    assert made.returncode == 0, made.stderr
    (own,) = env_dir.glob("lib/python3*/site-packages")
    deps = site.getsitepackages()[0]
    (own / "zz_project_deps.pth").write_text(
        f"{deps}\nimport sys; sys.modules.update(dict.fromkeys({ABSENT!r}))\n",
        encoding="utf-8",
    )
    installed = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(env_dir / "bin" / "python"),
            "install",
            "--no-deps",
            "--no-index",
            "--quiet",
            str(wheel),
        ]
    )
    assert installed.returncode == 0, installed.stderr[-2000:]
    return env_dir


def _env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIYU_", "PYTHON"))}
    env.update(SIYU_DATA_DIR=str(tmp_path / "data"), HOME=str(tmp_path))
    return env


def test_installed_wheel_runs_help_migrate_and_analyze(venv: Path, tmp_path: Path) -> None:
    siyu = str(venv / "bin" / "siyu")
    env = _env(tmp_path)
    where = _run(
        [str(venv / "bin" / "python"), "-c", "import compliance_nlp, torch"], cwd=tmp_path, env=env
    )
    assert where.returncode != 0 and "torch" in where.stderr  # the base install's view

    helped = _run([siyu, "--help"], cwd=tmp_path, env=env)
    assert helped.returncode == 0, helped.stderr[-2000:]
    assert "migrate" in helped.stdout and "nlp" in helped.stdout

    migrated = _run([siyu, "migrate"], cwd=tmp_path, env=env)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    assert (tmp_path / "data" / "siyu.sqlite3").is_file()

    lines = [
        {"id": 1, "text": "这款保本保息，稳赚不赔，加我VX详聊", "role": "advisor"},
        {"id": 2, "text": "我想把这款理财赎回", "role": "customer"},
        {"id": 3, "text": "not json"},
    ]
    stdin = "\n".join(json.dumps(r, ensure_ascii=False) for r in lines) + "\n{oops\n"
    analysed = _run([siyu, "nlp", "analyze", "--no-progress"], cwd=tmp_path, env=env, input=stdin)
    assert analysed.returncode == 0, analysed.stderr[-2000:]
    out = [json.loads(line) for line in analysed.stdout.splitlines()]
    assert [o["id"] for o in out] == [1, 2, 3, None]
    assert {"guaranteed_return"} <= {v["category"] for v in out[0]["violations"]}
    assert out[1]["intent"] == "redemption_intent" and out[1]["intent_score"] is not None
    assert "error" in out[2] and "error" in out[3]

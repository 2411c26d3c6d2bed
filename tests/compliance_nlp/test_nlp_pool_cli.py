"""The pool keeps the loop free; the CLI streams JSONL and evaluates labelled files."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path

import pytest

from compliance_nlp import AnalyzerConfig
from compliance_nlp.cli import _cmd_analyze, register
from compliance_nlp.pool import AnalyzerPool

DATA = Path(__file__).resolve().parents[2] / "compliance_nlp" / "training" / "data"


async def _ticks_while(coro: object) -> tuple[object, int]:
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    try:
        result = await coro  # type: ignore[misc]
    finally:
        done = True
        await task
    return result, ticks


async def test_thread_pool_does_not_block_the_loop() -> None:
    pool = AnalyzerPool(AnalyzerConfig(), processes=0)
    await pool.start()
    try:
        items = [("这款产品保本保息", "advisor"), ("我想赎回", "customer")] * 200
        results, ticks = await _ticks_while(pool.analyze_many(items))
        assert len(results) == 400  # type: ignore[arg-type]
        assert results[0].has_violation and results[1].intent == "redemption_intent"  # type: ignore[index]
        assert ticks > 1  # the loop kept running while the batch was analysed
        single = await pool.analyze("电话13812345678", "customer")
        assert single.masked_text == "电话138****5678"
    finally:
        await pool.close()


async def test_process_pool_warms_and_analyses() -> None:
    pool = AnalyzerPool(AnalyzerConfig(), processes=1)
    await pool.start()
    try:
        rss = await pool.worker_rss()
        assert len(rss) == 1 and rss[0] > 0
        results = await pool.analyze_many([("加我VX详聊", "advisor"), ("我要投诉", "customer")])
        assert results[0].violations[0].category == "off_book_dealing"
        assert results[1].intent == "complaint"
    finally:
        await pool.close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="siyu")
    register(parser.add_subparsers(dest="cmd", required=True), lambda: AnalyzerConfig())
    return parser


def test_cli_analyze_streams_jsonl_and_reports_bad_lines() -> None:
    lines = [
        json.dumps({"id": 1, "text": "这款产品保本保息", "role": "advisor"}, ensure_ascii=False),
        "not json",
        json.dumps({"id": 3, "text": "电话13812345678", "role": "customer"}, ensure_ascii=False),
        json.dumps({"id": 4, "text": "hi", "role": "robot"}),
        json.dumps([1, 2]),
        json.dumps({"id": 6, "text": None, "role": "advisor"}),
    ]
    args = _parser().parse_args(["nlp", "analyze", "--no-progress"])
    out = io.StringIO()
    rc = _cmd_analyze(args, AnalyzerConfig, io.StringIO("\n".join(lines) + "\n"), out)
    assert rc == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    assert len(rows) == 6
    assert rows[0]["id"] == 1 and rows[0]["violations"][0]["category"] == "guaranteed_return"
    assert set(rows[0]) == {
        "id",
        "intent",
        "intent_score",
        "sentiment",
        "violations",
        "pii",
        "masked_text",
    }
    assert "error" in rows[1] and rows[1]["line"] == 2
    assert rows[2]["masked_text"] == "电话138****5678"
    assert rows[3]["id"] == 4 and "role" in rows[3]["error"]
    assert "error" in rows[4] and "error" in rows[5]


def test_cli_eval_prints_metrics(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    sample = tmp_path / "sample.jsonl"
    rows = [
        json.loads(line)
        for line in (DATA / "dev2.jsonl").read_text(encoding="utf-8").splitlines()[:40]
    ]
    sample.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows), encoding="utf-8")
    args = _parser().parse_args(["nlp", "eval", str(sample)])
    rc = args.func(args)
    out = capsys.readouterr().out
    assert rc in (0, 1)
    assert "violation_recall" in out and "guaranteed_return" in out and "targets:" in out


def test_cli_eval_missing_file_is_exit_2(tmp_path: Path) -> None:
    args = _parser().parse_args(["nlp", "eval", str(tmp_path / "missing.jsonl")])
    assert args.func(args) == 2


def test_cli_eval_pools_thread_files(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """Two annotators' thread files measured as one set (the held-out thread figure)."""
    threads = (DATA / "threads_dev1.jsonl").read_text(encoding="utf-8").splitlines()
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("\n".join(threads[:6]), encoding="utf-8")
    second.write_text("\n".join(threads[6:10]), encoding="utf-8")
    args = _parser().parse_args(["nlp", "eval", str(first), str(second)])
    assert args.func(args) in (0, 1)
    assert "threads: 10 " in capsys.readouterr().out
    lines = tmp_path / "lines.jsonl"
    lines.write_text((DATA / "dev2.jsonl").read_text(encoding="utf-8").splitlines()[0])
    args = _parser().parse_args(["nlp", "eval", str(first), str(lines)])
    assert args.func(args) == 2
    assert "cannot be pooled" in capsys.readouterr().err


_ORPHAN_PARENT = """
import asyncio, sys
from compliance_nlp import AnalyzerConfig
from compliance_nlp.pool import AnalyzerPool, _worker_ready

async def main():
    pool = AnalyzerPool(AnalyzerConfig(use_model=False), processes=1)
    await pool.start()
    pid = await asyncio.get_running_loop().run_in_executor(pool._require(), _worker_ready)
    print(pid, flush=True)
    await asyncio.sleep(120)

asyncio.run(main())
"""


def _alive(pid: int) -> bool:
    """True while ``pid`` runs; a zombie (dead, not yet reaped by init) counts as gone."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as fh:
            return not any(line.startswith("State:") and "Z" in line for line in fh)
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_pool_workers_die_when_the_parent_is_killed() -> None:
    """A SIGKILLed owner runs no cleanup; its workers must not linger holding the model."""
    import os
    import signal
    import subprocess
    import sys
    import time

    root = Path(__file__).resolve().parents[2]
    parent = subprocess.Popen(
        [sys.executable, "-c", _ORPHAN_PARENT], cwd=root, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        worker = int(parent.stdout.readline())
        assert _alive(worker)
        parent.kill()
        parent.wait(timeout=10)
        deadline = time.monotonic() + 15
        while _alive(worker) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(worker), "pool worker outlived its killed parent"
    finally:
        if parent.poll() is None:
            parent.kill()
        try:
            os.kill(worker, signal.SIGKILL)
        except (ProcessLookupError, UnboundLocalError):
            pass


def test_cli_train_without_its_data_is_exit_2_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """As from an installed package, which carries no training data."""
    out = tmp_path / "models"
    args = _parser().parse_args(
        ["nlp", "train", "--train-file", str(tmp_path / "nope.jsonl"), "--output-dir", str(out)]
    )
    assert args.func(args) == 2
    assert "missing training data" in capsys.readouterr().err
    assert not out.exists()


def test_cli_train_refuses_an_unknown_model_kind_and_writes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "models"
    args = _parser().parse_args(
        ["nlp", "train", "--kinds", "pair,sentiment", "--output-dir", str(out)]
    )
    assert args.func(args) == 2
    assert "unknown model kind: sentiment" in capsys.readouterr().err
    assert not out.exists()

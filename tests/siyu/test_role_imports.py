"""A receiver-only process never loads the NLP runtime (onnxruntime, tokenizers, torch).

The receiver answers WeCom's callback with Redis alone; the models belong to the worker.
Each deployment runs many receivers, and loading the model stack would cost each one
memory and start-up time for nothing. Checked in a fresh interpreter (the test session
itself has loaded everything), with the app started and a callback GET answered.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
NLP_STACK = ("onnxruntime", "tokenizers", "torch", "transformers", "numpy")

_RECEIVER = """
import asyncio, base64, json, secrets, sys
from pathlib import Path

import siyu.app
from core.server import start_site
from core.settings import Settings

async def main(data_dir, redis_url):
    settings = Settings(
        _env_file=None,
        data_dir=Path(data_dir),
        database_url=f"sqlite://{data_dir}/unused.sqlite3",
        redis_url=redis_url,
        wecom={
            "corp_id": "wwtestcorp0000001",
            "token": secrets.token_urlsafe(16),
            "encoding_aes_key": base64.b64encode(secrets.token_bytes(32)).decode()[:43],
            "agent_id": 1000002,
            "app_secret": "",
        },
        crypto={"keys": {"t1": base64.b64encode(secrets.token_bytes(32)).decode()},
                "active_key_id": "t1"},
        pipeline={"stream": "siyu:test:roleimports"},
    )
    app = siyu.app.create_app(settings, ("receiver",))
    runner, port = await start_site(app, "127.0.0.1", 0)
    try:
        import aiohttp
        async with aiohttp.ClientSession() as session:
            async with session.get(f"http://127.0.0.1:{port}/wecom/callback") as resp:
                status = resp.status
    finally:
        await runner.cleanup()
    loaded = sorted({m.split(".")[0] for m in sys.modules} & set(sys.argv[3].split(",")))
    print(json.dumps({"status": status, "loaded": loaded}))

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


def test_receiver_role_never_imports_the_nlp_stack(tmp_path: Path, redis_url: str) -> None:
    out = subprocess.run(
        [sys.executable, "-c", _RECEIVER, str(tmp_path), redis_url, ",".join(NLP_STACK)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["status"] == 400  # a callback without its signature: refused, but served
    assert result["loaded"] == []

"""The ctypes binding of WeCom's finance SDK, against a C library with the same API."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from bot import models
from bot.archive_puller import ArchivePuller, FinanceSdkError, NativeFinanceSdk
from bot.keys import METRICS, STREAM
from tests.bot.harness import Edge

SRC = Path(__file__).parent.parent / "fixtures" / "finance_sdk" / "fake_finance_sdk.c"


@pytest.fixture(scope="module")
def sdk_lib(tmp_path_factory: pytest.TempPathFactory) -> str:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler")
    out = tmp_path_factory.mktemp("sdk") / "libFakeFinanceSdk.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-o", str(out), str(SRC)], check=True)
    return str(out)


def test_init_with_a_wrong_secret_fails(sdk_lib: str) -> None:
    with pytest.raises(FinanceSdkError) as err:
        NativeFinanceSdk(sdk_lib, "wwcorp", "wrong")
    assert err.value.code == 10002


async def test_puller_through_the_native_binding(
    edge: Edge, sdk_lib: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    enc_key = base64.b64encode(
        key.public_key().encrypt(b"random-key-0123456789", padding.PKCS1v15())
    ).decode()
    userid, ext = next((u, e) for u, fs in edge.state.follows.items() for e in fs)
    lines = []
    for seq in range(1, 4):
        rec = {
            "msgid": f"n{seq}",
            "action": "send",
            "from": ext,
            "tolist": [userid],
            "roomid": "",
            "msgtime": 1764300000000 + seq,
            "msgtype": "text",
            "text": {"content": f"第{seq}条"},
        }
        item = {
            "seq": seq,
            "msgid": f"n{seq}",
            "publickey_ver": 3,
            "encrypt_random_key": enc_key,
            "encrypt_chat_msg": json.dumps(rec),
        }
        lines.append(f"{seq} {json.dumps(item)}")
    data = tmp_path / "chatdata.txt"
    data.write_text("\n".join(lines) + "\n")
    monkeypatch.setenv("SIYU_TEST_FINANCE_DATA", str(data))
    sdk = NativeFinanceSdk(sdk_lib, "wwcorp", "archive-secret")
    try:
        puller = ArchivePuller(
            sdk=sdk,
            private_keys={"3": key},
            stream=edge.app[STREAM],
            metrics=edge.app[METRICS],
            batch_size=2,
        )
        report = await puller.pull_once()
        assert (report.batches, report.accepted, report.cursor) == (2, 3, 3)
        assert (await puller.pull_once()).records == 0
    finally:
        sdk.close()
    await edge.process_all()
    assert sorted(m.msgid for m in await models.Message.filter(source="archive")) == [
        "n1",
        "n2",
        "n3",
    ]
    assert (await models.ArchiveCursor.get(name="default")).seq == 3

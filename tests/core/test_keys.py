"""Field keys: no key material in a repr, unique ids, atomic creation under a race."""

from __future__ import annotations

import base64
import json
import multiprocessing as mp
import secrets
from pathlib import Path

from core.crypto import Keyring, key_fingerprint, load_keyring
from core.settings import Settings


def test_repr_carries_no_key_material() -> None:
    key = secrets.token_bytes(32)
    ring = Keyring(keys={"k1": key}, active_key_id="k1")
    text = repr(ring) + str(ring)
    for form in (repr(key), key.hex(), base64.b64encode(key).decode()):
        assert form not in text
    assert "k1" in text and key_fingerprint(key) in text


def test_recreated_key_file_gets_a_new_key_id(tmp_path: Path) -> None:
    s = Settings(_env_file=None, data_dir=tmp_path)
    first = load_keyring(s)
    (tmp_path / "field-keys.json").unlink()
    second = load_keyring(s)
    # A sealed value names its key id: a new key must never answer to the old one's id.
    assert first.active_key_id != second.active_key_id
    sealed = first.seal_text("x", aad="a")
    assert sealed.split(".")[1] not in second.keys


def _load(data_dir: str, start: mp.synchronize.Event, out: mp.Queue[str]) -> None:  # type: ignore[name-defined]
    start.wait()
    try:
        ring = load_keyring(Settings(_env_file=None, data_dir=Path(data_dir)))
        out.put(ring.active_key_id + ":" + key_fingerprint(ring.keys[ring.active_key_id]))
    except Exception as exc:  # noqa: BLE001 - reported to the parent as the test's failure
        out.put(f"error:{type(exc).__name__}:{exc}")


def test_processes_starting_together_share_one_whole_key_file(tmp_path: Path) -> None:
    ctx = mp.get_context("spawn")
    for attempt in range(3):
        data_dir = tmp_path / f"run{attempt}"
        start, out = ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=_load, args=(str(data_dir), start, out)) for _ in range(6)]
        for p in procs:
            p.start()
        start.set()
        results = [out.get(timeout=60) for _ in procs]
        for p in procs:
            p.join(timeout=60)
        assert not [r for r in results if r.startswith("error")], results
        assert len(set(results)) == 1, results
        data = json.loads((data_dir / "field-keys.json").read_text())
        assert list(data["keys"]) == [data["active"]]
        assert not [p for p in data_dir.iterdir() if p.name != "field-keys.json"]

"""A keyring builds one AES-GCM cipher per key, not one per value it seals or opens."""

from __future__ import annotations

import copy
import os
import pickle
from typing import Any

import pytest

from core import crypto
from core.crypto import Keyring


def test_one_cipher_per_key_whatever_the_values(monkeypatch: pytest.MonkeyPatch) -> None:
    built: list[bytes] = []
    real = crypto.AESGCM

    def counting(key: bytes) -> Any:
        built.append(key)
        return real(key)

    monkeypatch.setattr(crypto, "AESGCM", counting)
    old, new = os.urandom(32), os.urandom(32)
    sealed_old = Keyring(keys={"k1": old}, active_key_id="k1").seal_text("旧", aad="m:1")
    ring = Keyring(keys={"k1": old, "k2": new}, active_key_id="k2")
    built.clear()
    sealed = [ring.seal_text(f"消息{i}", aad=f"m:{i}") for i in range(50)]
    assert [ring.open_text(s, aad=f"m:{i}") for i, s in enumerate(sealed)] == [
        f"消息{i}" for i in range(50)
    ]
    assert ring.open_text(sealed_old, aad="m:1") == "旧"
    assert sorted(built) == sorted([old, new])


def test_a_keyring_that_has_sealed_still_copies_and_pickles() -> None:
    ring = Keyring(keys={"k1": os.urandom(32)}, active_key_id="k1")
    sealed = ring.seal_text("本金", aad="m:1")
    for other in (pickle.loads(pickle.dumps(ring)), copy.deepcopy(ring)):
        assert other == ring
        assert other.open_text(sealed, aad="m:1") == "本金"
    assert "AESGCM" not in repr(ring)

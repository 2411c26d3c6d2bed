"""Field keys name themselves safely: a key check per id, and a retryable unknown id."""

from __future__ import annotations

import base64
import secrets

import pytest

from core.crypto import DecryptionError, Keyring, UnknownKeyIdError, key_check, sealed_key_id


def test_key_check_identifies_a_key_under_its_id_and_reveals_none() -> None:
    key, other = secrets.token_bytes(32), secrets.token_bytes(32)
    check = key_check("k1", key)
    assert check == key_check("k1", key)
    assert check != key_check("k1", other)  # another key under the same id
    assert check != key_check("k2", key)  # the same key under another id
    for form in (key.hex(), base64.b64encode(key).decode()):
        assert form not in check
    ring = Keyring(keys={"k1": key, "k2": other}, active_key_id="k2")
    assert ring.key_checks() == {"k1": check, "k2": key_check("k2", other)}


def test_unknown_key_id_is_its_own_error_naming_the_id() -> None:
    new = Keyring(keys={"kNEW": secrets.token_bytes(32)}, active_key_id="kNEW")
    sealed = new.seal_text("x", aad="a")
    assert sealed_key_id(sealed) == "kNEW"
    old = Keyring(keys={"k1": secrets.token_bytes(32)}, active_key_id="k1")
    with pytest.raises(UnknownKeyIdError) as err:
        old.open_text(sealed, aad="a")
    assert err.value.key_id == "kNEW"
    # Tampering stays a plain decryption failure: it can never succeed.
    tampered = Keyring(keys={"kNEW": secrets.token_bytes(32)}, active_key_id="kNEW")
    with pytest.raises(DecryptionError) as bad:
        tampered.open_text(sealed, aad="a")
    assert not isinstance(bad.value, UnknownKeyIdError)
    assert sealed_key_id("not sealed") is None

"""The callback crypto adapter: WeCom's official sample, round trips, and every bad input."""

from __future__ import annotations

import base64
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import padding as stock_padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from wechatpy.work.crypto import WeChatCrypto

from bot.wecom.crypto import CallbackCrypto, CallbackError, compute_signature
from bot.wecom.parse import parse_inbound

FIXTURES = Path(__file__).parents[2] / "fixtures" / "wecom"
SAMPLE: dict[str, Any] = json.loads(
    (FIXTURES / "official_crypto_sample.json").read_text(encoding="utf-8")
)

TOKEN = "pT7rQ2wX9sLm4Kc"
AES_KEY = "kY3vN8qR2tW6zB1dF5hJ9mP4sU7xA0cE3gI6lO9rT2w"
CORP_ID = "ww8a3f5c2e1b7d9046"
TS = "1718000201"
NONCE = "1372623149"


@pytest.fixture
def crypto() -> CallbackCrypto:
    return CallbackCrypto(token=TOKEN, encoding_aes_key=AES_KEY, receive_id=CORP_ID)


def sample_crypto() -> CallbackCrypto:
    return CallbackCrypto(
        token=SAMPLE["token"],
        encoding_aes_key=SAMPLE["encoding_aes_key"],
        receive_id=SAMPLE["receive_id"],
    )


def raw_encrypt(payload: bytes, key_b64: str = AES_KEY) -> str:
    """AES-256-CBC with WeCom's key/IV, no padding added: the test controls every byte."""
    key = base64.b64decode(key_b64 + "=")
    encryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    return base64.b64encode(encryptor.update(payload) + encryptor.finalize()).decode()


def frame(message: bytes, receive_id: bytes = CORP_ID.encode()) -> bytes:
    return b"0123456789abcdef" + struct.pack(">I", len(message)) + message + receive_id


def body_for(encrypt: str) -> bytes:
    return (
        f"<xml><ToUserName><![CDATA[{CORP_ID}]]></ToUserName>"
        f"<Encrypt><![CDATA[{encrypt}]]></Encrypt><AgentID><![CDATA[1000002]]></AgentID></xml>"
    ).encode()


def decrypt_signed(crypto: CallbackCrypto, encrypt: str) -> str:
    """Decrypt a body whose signature is valid, so the check under test is the next one."""
    signature = crypto.signature(timestamp=TS, nonce=NONCE, encrypt=encrypt)
    return crypto.decrypt_body(
        msg_signature=signature, timestamp=TS, nonce=NONCE, body=body_for(encrypt)
    )


# -- WeCom's official sample (加解密方案说明 / WXBizMsgCrypt Sample) --------------------


def test_official_sample_url_verification() -> None:
    verify = SAMPLE["verify_url"]
    echo = sample_crypto().verify_url(
        msg_signature=verify["msg_signature"],
        timestamp=verify["timestamp"],
        nonce=verify["nonce"],
        echostr=verify["echostr"],
    )
    assert echo == verify["echostr_plaintext"] == "1616140317555161061"


def test_official_sample_post_body_decrypts_and_parses() -> None:
    post = SAMPLE["post"]
    plaintext = sample_crypto().decrypt_body(
        msg_signature=post["msg_signature"],
        timestamp=post["timestamp"],
        nonce=post["nonce"],
        body=post["body"].encode(),
    )
    assert plaintext == post["plaintext"]
    inbound = parse_inbound(plaintext)
    assert (inbound.kind, inbound.msg_type, inbound.text("Content")) == ("message", "text", "hello")
    assert inbound.dedup_key == "msg:4561255354251345929"


def test_official_sample_post_needs_32_byte_pkcs7() -> None:
    """WeCom's own sample carries 30 bytes of padding: a stock 16-byte unpadder rejects it."""
    post = SAMPLE["post"]
    key = base64.b64decode(SAMPLE["encoding_aes_key"] + "=")
    encrypt = post["body"].split("<![CDATA[")[2].split("]]>")[0]
    decryptor = Cipher(algorithms.AES(key), modes.CBC(key[:16])).decryptor()
    padded = decryptor.update(base64.b64decode(encrypt)) + decryptor.finalize()
    assert padded[-1] == 30
    unpadder = stock_padding.PKCS7(128).unpadder()
    with pytest.raises(ValueError):
        unpadder.update(padded) + unpadder.finalize()


def test_encrypt_reproduces_the_official_echostr_byte_for_byte() -> None:
    verify = SAMPLE["verify_url"]
    encrypt, signature = sample_crypto().encrypt(
        verify["echostr_plaintext"],
        nonce=verify["nonce"],
        timestamp=verify["timestamp"],
        random_prefix=b"c41b64491c2468d0",  # the random(16) inside the official echostr
    )
    assert encrypt == verify["echostr"]
    assert signature == verify["msg_signature"]


def test_compute_signature_matches_official_sample() -> None:
    verify = SAMPLE["verify_url"]
    assert (
        compute_signature(
            token=SAMPLE["token"],
            timestamp=verify["timestamp"],
            nonce=verify["nonce"],
            encrypt=verify["echostr"],
        )
        == verify["msg_signature"]
    )


# -- round trips -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "plaintext",
    [
        "",
        "x",
        "<xml><Content><![CDATA[您好，我想赎回这只基金]]></Content></xml>",
        "a" * 12,  # frame = 16 + 4 + 12 + 18 = 50 → 14 bytes of padding
        "a" * 26,  # frame = 64 exactly → a whole extra block of 32 × 0x20
        "b" * 10,  # frame = 48 → pad 16: identical under 16- and 32-byte PKCS#7
        "長" * 500,
    ],
)
def test_round_trip(crypto: CallbackCrypto, plaintext: str) -> None:
    encrypt, signature = crypto.encrypt(plaintext, nonce=NONCE, timestamp=TS)
    assert len(base64.b64decode(encrypt)) % 32 == 0
    assert signature == crypto.signature(timestamp=TS, nonce=NONCE, encrypt=encrypt)
    assert (
        crypto.verify_url(msg_signature=signature, timestamp=TS, nonce=NONCE, echostr=encrypt)
        == plaintext
    )


def test_build_callback_body_round_trip(crypto: CallbackCrypto) -> None:
    xml = (FIXTURES / "event_change_external_contact_add_external_contact.xml").read_text("utf-8")
    body, signature = crypto.build_callback_body(
        xml, nonce=NONCE, timestamp=TS, to_user_name=CORP_ID, agent_id="1000002"
    )
    assert body.startswith(b"<xml><ToUserName><![CDATA[ww8a3f5c2e1b7d9046]]></ToUserName><Encrypt>")
    assert b"<AgentID><![CDATA[1000002]]></AgentID></xml>" in body
    assert crypto.decrypt_body(msg_signature=signature, timestamp=TS, nonce=NONCE, body=body) == xml


def test_encrypting_twice_differs_but_decrypts_the_same(crypto: CallbackCrypto) -> None:
    first, _ = crypto.encrypt("<xml/>", nonce=NONCE, timestamp=TS)
    second, _ = crypto.encrypt("<xml/>", nonce=NONCE, timestamp=TS)
    assert first != second
    assert crypto.decrypt(first) == crypto.decrypt(second) == "<xml/>"


def test_wechatpy_decrypts_what_we_encrypt(crypto: CallbackCrypto) -> None:
    """Interop with an independent implementation (the one the sandbox's peers may use)."""
    text = "<xml><Content><![CDATA[理财产品到期提醒]]></Content></xml>"
    body, signature = crypto.build_callback_body(
        text, nonce=NONCE, timestamp=TS, to_user_name=CORP_ID, agent_id="1000002"
    )
    other = WeChatCrypto(TOKEN, AES_KEY, CORP_ID)
    assert other.decrypt_message(body.decode(), signature, TS, NONCE) == text


# -- bad input: each gets its own status and reason ----------------------------------------


def assert_refused(exc_info: pytest.ExceptionInfo[CallbackError], status: int, reason: str) -> None:
    assert (exc_info.value.status, exc_info.value.reason) == (status, reason), str(exc_info.value)


def test_bad_signature_is_403(crypto: CallbackCrypto) -> None:
    body, signature = crypto.build_callback_body(
        "<xml/>", nonce=NONCE, timestamp=TS, to_user_name=CORP_ID, agent_id="1"
    )
    tampered = ("0" if signature[0] != "0" else "1") + signature[1:]
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(msg_signature=tampered, timestamp=TS, nonce=NONCE, body=body)
    assert_refused(exc_info, 403, "bad_signature")
    assert TOKEN not in str(exc_info.value)


@pytest.mark.parametrize("field", ["timestamp", "nonce"])
def test_signature_covers_timestamp_and_nonce(crypto: CallbackCrypto, field: str) -> None:
    body, signature = crypto.build_callback_body(
        "<xml/>", nonce=NONCE, timestamp=TS, to_user_name=CORP_ID, agent_id="1"
    )
    params = {"timestamp": TS, "nonce": NONCE, field: "1"}
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(msg_signature=signature, body=body, **params)
    assert_refused(exc_info, 403, "bad_signature")


def test_non_ascii_signature_is_a_mismatch_not_a_crash(crypto: CallbackCrypto) -> None:
    encrypt, _ = crypto.encrypt("1", nonce=NONCE, timestamp=TS)
    with pytest.raises(CallbackError) as exc_info:
        crypto.verify_url(msg_signature="签名", timestamp=TS, nonce=NONCE, echostr=encrypt)
    assert_refused(exc_info, 403, "bad_signature")


def test_wrong_receive_id_is_403(crypto: CallbackCrypto) -> None:
    other_corp = CallbackCrypto(
        token=TOKEN, encoding_aes_key=AES_KEY, receive_id="ww0000000000000001"
    )
    encrypt, _ = other_corp.encrypt("<xml/>", nonce=NONCE, timestamp=TS)
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, encrypt)
    assert_refused(exc_info, 403, "bad_receive_id")
    assert "ww0000000000000001" in str(exc_info.value)


@pytest.mark.parametrize(
    "receive_id", [CORP_ID[:-1], CORP_ID + " ", CORP_ID.upper(), "", CORP_ID + "\x00"]
)
def test_receive_id_is_compared_exactly(crypto: CallbackCrypto, receive_id: str) -> None:
    encrypt = raw_encrypt(_pad32(frame(b"<xml/>", receive_id.encode())))
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, encrypt)
    assert_refused(exc_info, 403, "bad_receive_id")


@pytest.mark.parametrize("encrypt", ["not base64!!", "=QUJD", "QUJDRA", "Q", "栗子=="])
def test_bad_base64_is_400(crypto: CallbackCrypto, encrypt: str) -> None:
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, encrypt)
    assert_refused(exc_info, 400, "bad_base64")


def test_ciphertext_not_whole_aes_blocks_is_400(crypto: CallbackCrypto) -> None:
    encrypt = base64.b64encode(b"x" * 20).decode()
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, encrypt)
    assert_refused(exc_info, 400, "bad_ciphertext")


@pytest.mark.parametrize(
    "tail",
    [
        b"\x00" * 32,  # pad byte 0
        b"\x21" * 32,  # pad byte 33 > block size
        b"\x05" * 27 + b"\x04\x05\x05\x05\x05",  # pad bytes disagree
        b"\xff" * 32,
    ],
)
def test_bad_padding_is_400(crypto: CallbackCrypto, tail: bytes) -> None:
    framed = frame(b"<xml/>")
    framed += b"z" * (-len(framed) % 32)  # whole blocks; the last block is the bad padding
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, raw_encrypt(framed + tail))
    assert_refused(exc_info, 400, "bad_padding")


def test_16_byte_padding_that_is_not_valid_32_byte_padding_is_rejected(
    crypto: CallbackCrypto,
) -> None:
    framed = frame(b"<xml/>ab")  # 16 + 4 + 8 + 18 = 46 bytes: 14 short of 32, 2 of 16
    assert len(framed) % 32 < 16
    unpadded_to_16 = framed + bytes([16 - len(framed) % 16]) * (16 - len(framed) % 16)
    assert len(unpadded_to_16) % 32 == 16  # an odd number of AES blocks
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, raw_encrypt(unpadded_to_16))
    assert_refused(exc_info, 400, "bad_padding")
    assert "32-byte" in str(exc_info.value)


def test_16_byte_padding_identical_to_32_byte_padding_is_accepted(crypto: CallbackCrypto) -> None:
    """When len % 32 >= 16 both schemes add the same bytes, so the message is valid."""
    message = b"<xml>a</xml>"
    framed = frame(message)  # 16 + 4 + 12 + 18 = 50 bytes: both schemes add 14 × 0x0e
    assert len(framed) % 32 >= 16
    padder = stock_padding.PKCS7(128).padder()
    padded_16 = padder.update(framed) + padder.finalize()
    assert padded_16 == _pad32(framed)
    assert decrypt_signed(crypto, raw_encrypt(padded_16)) == message.decode()


@pytest.mark.parametrize("pad", [17, 24, 31, 32])
def test_valid_32_byte_padding_above_16_is_accepted(crypto: CallbackCrypto, pad: int) -> None:
    """The bug wechatpy-style 16-byte unpadders have: pads of 17..32 are legitimate."""
    receive_id = CORP_ID.encode()
    message_len = (32 - pad - (20 + len(receive_id)) % 32) % 32 + 64
    message = b"m" * message_len
    framed = frame(message)
    assert 32 - len(framed) % 32 == pad
    assert decrypt_signed(crypto, raw_encrypt(_pad32(framed))) == message.decode()


def test_length_field_beyond_plaintext_is_400(crypto: CallbackCrypto) -> None:
    framed = b"0123456789abcdef" + struct.pack(">I", 10_000) + b"<xml/>" + CORP_ID.encode()
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, raw_encrypt(_pad32(framed)))
    assert_refused(exc_info, 400, "bad_length")


def test_plaintext_shorter_than_header_is_400(crypto: CallbackCrypto) -> None:
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, raw_encrypt(_pad32(b"short")))
    assert_refused(exc_info, 400, "bad_length")


def test_wrong_aes_key_fails_before_anything_is_returned(crypto: CallbackCrypto) -> None:
    other_key = CallbackCrypto(token=TOKEN, encoding_aes_key="z" * 42 + "A", receive_id=CORP_ID)
    encrypt, _ = other_key.encrypt("<xml><Content>秘密</Content></xml>", nonce=NONCE, timestamp=TS)
    with pytest.raises(CallbackError) as exc_info:
        decrypt_signed(crypto, encrypt)
    assert exc_info.value.status in (400, 403)


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b"   ",
        b"<xml><Encrypt>abc</Encrypt>",
        b"not xml at all",
        b"<xml><Encrypt>a</Encrypt></xml><xml/>",
        "<xml><Encrypt>\u00e9</Encrypt></xml>".encode("latin-1"),
    ],
)
def test_malformed_outer_xml_is_400(crypto: CallbackCrypto, body: bytes) -> None:
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(msg_signature="x", timestamp=TS, nonce=NONCE, body=body)
    assert_refused(exc_info, 400, "malformed_xml")


@pytest.mark.parametrize(
    "body",
    [
        b'<?xml version="1.0"?><!DOCTYPE xml><xml><Encrypt>abc</Encrypt></xml>',
        (
            b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
            b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;">]><xml><Encrypt>&lol2;</Encrypt></xml>'
        ),
        (
            b'<?xml version="1.0"?><!DOCTYPE xml [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
            b"<xml><Encrypt>&xxe;</Encrypt></xml>"
        ),
    ],
)
def test_doctype_and_entities_are_400(crypto: CallbackCrypto, body: bytes) -> None:
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(msg_signature="x", timestamp=TS, nonce=NONCE, body=body)
    assert_refused(exc_info, 400, "xml_entities")


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><ToUserName>ww1</ToUserName><AgentID>1</AgentID></xml>",
        b"<xml><Encrypt></Encrypt></xml>",
        b"<xml><Encrypt><Nested>x</Nested></Encrypt></xml>",
    ],
)
def test_missing_encrypt_is_400(crypto: CallbackCrypto, body: bytes) -> None:
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(msg_signature="x", timestamp=TS, nonce=NONCE, body=body)
    assert_refused(exc_info, 400, "missing_encrypt")


def test_xml_is_checked_before_the_signature(crypto: CallbackCrypto) -> None:
    """A forged request with a DOCTYPE is answered 400 without computing anything secret."""
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(
            msg_signature="forged", timestamp=TS, nonce=NONCE, body=b"<!DOCTYPE x><xml/>"
        )
    assert exc_info.value.status == 400


@pytest.mark.parametrize("key", ["short", "k" * 44, "kY3vN8qR2tW6zB1dF5hJ9mP4sU7xA0cE3gI6lO9rT2!"])
def test_bad_encoding_aes_key_is_a_config_error_that_hides_the_key(key: str) -> None:
    with pytest.raises(ValueError) as exc_info:
        CallbackCrypto(token=TOKEN, encoding_aes_key=key, receive_id=CORP_ID)
    assert "EncodingAESKey" in str(exc_info.value)
    assert key not in str(exc_info.value)


def _pad32(data: bytes) -> bytes:
    count = 32 - len(data) % 32
    return data + bytes([count]) * count

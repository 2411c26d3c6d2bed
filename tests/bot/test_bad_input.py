"""Bad input gets a clear status and changes nothing: nothing queued, nothing stored."""

from __future__ import annotations

import base64
import time

import pytest

from bot import models
from tests.bot.harness import Edge, xml
from tests.bot.test_edge import text_msg


async def _nothing_happened(edge: Edge) -> None:
    assert await edge.queued() == 0
    await edge.process_all()
    assert await models.Message.all().count() == 0
    assert await models.Event.all().count() == 0


async def test_bad_signature_403(edge: Edge) -> None:
    body, params = edge.signed(text_msg("1", "hi"))
    params["msg_signature"] = "f" * 40
    assert await edge.post_raw(body, params) == (403, "bad_signature")
    await _nothing_happened(edge)


async def test_stale_timestamp_403(edge: Edge) -> None:
    stale = str(int(time.time()) - edge.settings.wecom.callback_max_skew_s - 60)
    status, reason = await edge.post_callback(text_msg("2", "hi"), timestamp=stale)
    assert (status, reason) == (403, "stale_timestamp")
    await _nothing_happened(edge)


async def test_wrong_receive_id_403(edge: Edge) -> None:
    from bot.wecom.crypto import CallbackCrypto

    other = CallbackCrypto(
        token=edge.settings.wecom.token.get_secret_value(),
        encoding_aes_key=edge.settings.wecom.encoding_aes_key.get_secret_value(),
        receive_id="wwSOMEOTHERCORP",
    )
    ts, nonce = str(int(time.time())), "abc"
    body, sig = other.build_callback_body(
        text_msg("3", "hi"), nonce=nonce, timestamp=ts, to_user_name="x", agent_id="1"
    )
    status, reason = await edge.post_raw(
        body, {"msg_signature": sig, "timestamp": ts, "nonce": nonce}
    )
    assert (status, reason) == (403, "bad_receive_id")
    await _nothing_happened(edge)


def _signed_encrypt(edge: Edge, encrypt: str) -> tuple[bytes, dict[str, str]]:
    ts, nonce = str(int(time.time())), "n1"
    sig = edge.crypto.signature(timestamp=ts, nonce=nonce, encrypt=encrypt)
    body = f"<xml><ToUserName>x</ToUserName><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>"
    return body.encode(), {"msg_signature": sig, "timestamp": ts, "nonce": nonce}


async def test_bad_base64_400(edge: Edge) -> None:
    assert (await edge.post_raw(*_signed_encrypt(edge, "!!!not-base64***")))[0] == 400
    await _nothing_happened(edge)


async def test_bad_padding_400(edge: Edge) -> None:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = base64.b64decode(edge.settings.wecom.encoding_aes_key.get_secret_value() + "=")
    enc = Cipher(algorithms.AES(key), modes.CBC(key[:16])).encryptor()
    ct = enc.update(b"\x00" * 63 + b"\x50") + enc.finalize()  # last byte 0x50: no valid pad
    status, reason = await edge.post_raw(*_signed_encrypt(edge, base64.b64encode(ct).decode()))
    assert (status, reason) == (400, "bad_padding")
    await _nothing_happened(edge)


@pytest.mark.parametrize(
    "body",
    [
        b"<xml><Encrypt>unterminated",
        b"not xml at all",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaa">]><xml><Encrypt>&a;</Encrypt></xml>',
    ],
)
async def test_malformed_or_entity_xml_400(edge: Edge, body: bytes) -> None:
    params = {"msg_signature": "a" * 40, "timestamp": str(int(time.time())), "nonce": "n"}
    assert (await edge.post_raw(body, params))[0] == 400
    await _nothing_happened(edge)


async def test_inner_doctype_refused(edge: Edge) -> None:
    inner = (
        '<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><xml><MsgType>text</MsgType></xml>'
    )
    status, _ = await edge.post_callback(inner)
    assert status == 400
    await _nothing_happened(edge)


async def test_oversize_body_413(edge: Edge) -> None:
    params = {"msg_signature": "a" * 40, "timestamp": str(int(time.time())), "nonce": "n"}
    assert (await edge.post_raw(b"<xml>" + b"a" * (1024 * 1024 + 10) + b"</xml>", params))[0] == 413
    await _nothing_happened(edge)


async def test_missing_params_400(edge: Edge) -> None:
    body, _ = edge.signed(text_msg("4", "hi"))
    assert (await edge.post_raw(body, {}))[0] == 400
    await _nothing_happened(edge)


async def test_replayed_nonce_with_other_body_403(edge: Edge) -> None:
    ts = str(int(time.time()))
    first_body, first_params = edge.signed(text_msg("5", "hi"), timestamp=ts, nonce="same")
    assert (await edge.post_raw(first_body, first_params))[0] == 200
    status, reason = await edge.post_callback(text_msg("6", "forged"), timestamp=ts, nonce="same")
    assert (status, reason) == (403, "replayed_nonce")
    assert await edge.queued() == 1
    # WeCom's own retry (identical request) is answered like the original.
    assert await edge.post_raw(first_body, first_params) == (200, "success")
    assert await edge.queued() == 1


async def test_missing_msgtype_400(edge: Edge) -> None:
    status, _ = await edge.post_callback(xml({"ToUserName": "x", "CreateTime": 1}))
    assert status == 400
    await _nothing_happened(edge)


async def test_redis_down_answers_503(settings, analyzer) -> None:  # type: ignore[no-untyped-def]
    """Never "success" for something not durably queued."""
    from tests.bot.harness import start_edge

    settings.redis_url = "redis://127.0.0.1:1/0"  # nothing listens there
    e, closers = await start_edge(settings, analyzer=analyzer, migrate_only=True)
    try:
        status, text = await e.post_callback(text_msg("7", "hi"))
        assert (status, text) == (503, "queue unavailable")
        async with e.session.get(f"{e.base}/readyz") as resp:
            assert resp.status == 503
    finally:
        for close in closers:
            await close()

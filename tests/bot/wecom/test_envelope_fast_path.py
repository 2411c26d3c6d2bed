"""The receiver's fast envelope read agrees with the full parser, and never
accepts what the full parser would refuse."""

from __future__ import annotations

import pytest

from bot.wecom.crypto import CallbackError, _fast_encrypt, extract_encrypt
from bot.wecom.xmlsafe import parse_root

CANONICAL = [
    b"<xml><ToUserName><![CDATA[ww1]]></ToUserName><Encrypt><![CDATA[ab+/c=]]></Encrypt>"
    b"<AgentID><![CDATA[1000002]]></AgentID></xml>",
    b"<xml>\n  <ToUserName>ww1</ToUserName>\n  <Encrypt>QUJD</Encrypt>\n</xml>\n",
    b"<xml><Encrypt><![CDATA[ZZZ]]></Encrypt></xml>",
]

HOSTILE = [
    b'<!DOCTYPE x [<!ENTITY a "b">]><xml><Encrypt>&a;</Encrypt></xml>',
    b"<xml><Encrypt>a&amp;b</Encrypt></xml>",
    b"<xml><Encrypt>one</Encrypt><Encrypt>two</Encrypt></xml>",
    b"<xml><Outer><Encrypt>x</Encrypt></Outer></xml>",
    b"<?xml version='1.0'?><xml><Encrypt>x</Encrypt></xml>",
    b"<xml><Encrypt><![CDATA[a]]></Encrypt><!-- c --></xml>",
]


@pytest.mark.parametrize("body", CANONICAL)
def test_fast_path_agrees_with_the_full_parser(body: bytes) -> None:
    fast = _fast_encrypt(body)
    assert fast is not None
    element = parse_root(body).find("Encrypt")
    assert element is not None and fast == element.text == extract_encrypt(body)


@pytest.mark.parametrize("body", HOSTILE)
def test_anything_unusual_takes_the_full_parser(body: bytes) -> None:
    assert _fast_encrypt(body) is None
    try:
        value = extract_encrypt(body)
    except CallbackError:
        return  # refused by the full parser, as before
    element = parse_root(body).find("Encrypt")
    assert element is not None and value == element.text

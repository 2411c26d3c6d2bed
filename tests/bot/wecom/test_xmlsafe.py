"""Safe XML parsing: what is refused, and how nested WeCom elements are folded."""

from __future__ import annotations

import pytest

from bot.wecom.crypto import CallbackCrypto, CallbackError
from bot.wecom.parse import ParseError, parse_inbound
from bot.wecom.xmlsafe import MAX_DEPTH, XmlError, parse_xml


def test_flat_children_and_cdata() -> None:
    assert parse_xml(b"<xml><A>1</A><B><![CDATA[<b> & c]]></B><C/></xml>") == {
        "A": "1",
        "B": "<b> & c",
        "C": "",
    }


def test_str_and_bytes_agree() -> None:
    xml = "<xml><Content>中文内容</Content></xml>"
    assert parse_xml(xml) == parse_xml(xml.encode("utf-8")) == {"Content": "中文内容"}


def test_repeated_sibling_tags_become_a_list() -> None:
    assert parse_xml("<xml><Id>1</Id><Id>2</Id><Id>3</Id><X>y</X></xml>") == {
        "Id": ["1", "2", "3"],
        "X": "y",
    }


@pytest.mark.parametrize(
    ("xml", "expected"),
    [
        ("<xml><MemChangeList><Item>a</Item></MemChangeList></xml>", {"MemChangeList": ["a"]}),
        ("<xml><PicList><item><M>1</M></item></PicList></xml>", {"PicList": [{"M": "1"}]}),
        ("<xml><Nodes><Node><N>1</N></Node></Nodes></xml>", {"Nodes": [{"N": "1"}]}),
        ("<xml><Info><X>1</X></Info></xml>", {"Info": {"X": "1"}}),
        ("<xml><Info><X>1</X><X>2</X><Y>3</Y></Info></xml>", {"Info": {"X": ["1", "2"], "Y": "3"}}),
    ],
)
def test_nested_containers(xml: str, expected: dict[str, object]) -> None:
    assert parse_xml(xml) == expected


@pytest.mark.parametrize(
    "xml",
    [
        "<!DOCTYPE xml><xml/>",
        '<!DOCTYPE xml [<!ENTITY a "b">]><xml>&a;</xml>',
        '<!DOCTYPE xml SYSTEM "http://attacker.example/x.dtd"><xml/>',
    ],
)
def test_dtd_and_entities_are_refused(xml: str) -> None:
    with pytest.raises(XmlError) as exc_info:
        parse_xml(xml)
    assert exc_info.value.reason == "xml_entities"


@pytest.mark.parametrize(
    "xml", ["", "  ", "<xml>", "<xml></XML>", "text", "<xml>&undefined;</xml>"]
)
def test_malformed(xml: str) -> None:
    with pytest.raises(XmlError) as exc_info:
        parse_xml(xml)
    assert exc_info.value.reason == "malformed_xml"


def test_hostile_nesting_is_malformed_not_a_crash() -> None:
    deep = "<xml>" + "<a>" * 100_000 + "x" + "</a>" * 100_000 + "</xml>"
    with pytest.raises(XmlError) as exc_info:
        parse_xml(deep)
    assert exc_info.value.reason == "malformed_xml"
    assert str(MAX_DEPTH) in str(exc_info.value)


def test_hostile_nesting_in_decrypted_payload_is_400() -> None:
    deep = (
        "<xml><MsgType>text</MsgType><CreateTime>1</CreateTime>"
        + "<a>" * 5_000
        + "</a>" * 5_000
        + "</xml>"
    )
    with pytest.raises(ParseError) as exc_info:
        parse_inbound(deep)
    assert exc_info.value.status == 400


def test_hostile_nesting_in_envelope_does_not_crash_the_signature_check() -> None:
    crypto = CallbackCrypto(
        token="t", encoding_aes_key="kY3vN8qR2tW6zB1dF5hJ9mP4sU7xA0cE3gI6lO9rT2w", receive_id="ww1"
    )
    body = ("<xml><Encrypt>abc</Encrypt>" + "<a>" * 50_000 + "</a>" * 50_000 + "</xml>").encode()
    with pytest.raises(CallbackError) as exc_info:
        crypto.decrypt_body(msg_signature="x", timestamp="1", nonce="n", body=body)
    assert (exc_info.value.status, exc_info.value.reason) == (403, "bad_signature")


def test_decrypted_text_with_a_doctype_still_refused() -> None:
    """The fast path for decrypted str input never sees a declaration."""
    import pytest as _pytest

    from bot.wecom.xmlsafe import XmlError, parse_xml

    for doc in (
        '<!DOCTYPE xml [<!ENTITY e "x">]><xml><A>&e;</A></xml>',
        '<?xml version="1.0"?>\n<!DOCTYPE xml SYSTEM "file:///etc/passwd"><xml/>',
    ):
        with _pytest.raises(XmlError) as err:
            parse_xml(doc)
        assert err.value.reason == "xml_entities"
    with _pytest.raises(XmlError) as err:
        parse_xml("<xml><A>&undeclared;</A></xml>")
    assert err.value.reason == "malformed_xml"
    assert parse_xml("<xml><A>a &amp; b &#20320;</A></xml>") == {"A": "a & b 你"}

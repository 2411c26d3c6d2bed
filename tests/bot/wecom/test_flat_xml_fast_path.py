"""A plain message callback is read without expat; anything else as before.

``bot.wecom.xmlsafe.parse_xml`` reads ``<xml>`` with leaf children (plain text or one
CDATA section each) with regular expressions (issue 8, item 11: the receiver's CPU per
callback).  What must not change: the fields are exactly those the tree gives, and a
document with a DTD, an entity or anything else the fast path does not read goes to
``parse_root``, which refuses or parses it as before.
"""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET

import pytest

from bot.wecom import xmlsafe
from bot.wecom.xmlsafe import XmlError, parse_xml

PLAIN = (
    "<xml><ToUserName><![CDATA[ww1]]></ToUserName><FromUserName><![CDATA[lina]]>"
    "</FromUserName><CreateTime>1733400000</CreateTime><MsgType><![CDATA[text]]></MsgType>"
    "<Content><![CDATA[保本吗？<b>]]]]></Content><MsgId>7</MsgId><AgentID>1000002</AgentID></xml>"
)


def _by_tree(text: str) -> dict[str, object] | type[XmlError]:
    try:
        return xmlsafe._children_to_dict(xmlsafe.parse_root(text), depth=1)
    except XmlError:
        return XmlError


def _by_parse_xml(text: str) -> dict[str, object] | type[XmlError]:
    try:
        return parse_xml(text)
    except XmlError:
        return XmlError


def test_a_plain_message_is_read_without_expat(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_tree(*_: object, **__: object) -> ET.Element:
        raise AssertionError("the tree was built")

    expected = _by_tree(PLAIN)
    monkeypatch.setattr(xmlsafe, "parse_root", no_tree)
    assert parse_xml(PLAIN) == expected
    assert expected["Content"] == "保本吗？<b>]]"  # type: ignore[index]


@pytest.mark.parametrize(
    "text",
    [
        '<!DOCTYPE xml [<!ENTITY e "x">]><xml><A>&e;</A></xml>',
        '<xml><A>&e;</A><!DOCTYPE xml [<!ENTITY e "x">]></xml>',
        "<!DOCTYPE xml><xml><A>a</A></xml>",
        '<xml><A><!ENTITY e "x"></A></xml>',
        '<?xml version="1.0"?>\n<!DOCTYPE xml SYSTEM "file:///etc/passwd"><xml><A>a</A></xml>',
        "<xml><A>&#60;</A></xml>",
        "<xml><A>&amp;&lt;</A></xml>",
        "<xml><A>&lol9;</A></xml>",
    ],
)
def test_hostile_or_referencing_xml_is_read_as_before(text: str) -> None:
    """Declarations are refused, references resolved or refused — by the tree, as before."""
    assert xmlsafe._flat_fields(text) is None
    assert _by_parse_xml(text) == _by_tree(text)


def test_a_dtd_is_still_refused_as_such() -> None:
    with pytest.raises(XmlError) as refused:
        parse_xml('<!DOCTYPE xml [<!ENTITY e "x">]><xml><A>&e;</A></xml>')
    assert refused.value.reason == "xml_entities"


EDGES = [
    "<xml></xml>",
    "<xml>\n  <A>a</A>\n  <B></B>\n</xml>\n",
    "<xml><A><![CDATA[]]></A></xml>",
    "<xml><A><![CDATA[x]]>junk]]></A></xml>",
    "<xml><A><![CDATA[x]]></A><B>]]></A></xml>",
    "<xml><A><![CDATA[a]]]></A></xml>",
    "<xml><A><![CDATA[a]]]]></A></xml>",
    "<xml><A><![CDATA[<xml><B>b</B></xml>]]></A></xml>",
    "<xml><A><![CDATA[<!DOCTYPE x>]]></A></xml>",
    "<xml><A>a</A><A>b</A></xml>",
    "<xml><A><B>b</B></A></xml>",
    '<xml><A x="1">a</A></xml>',
    "<xml><A/></xml>",
    "<xml><A>a</B></xml>",
    "<xml><A>a</A>",
    "<xml><A>a</A></xml><xml></xml>",
    "<xml><A>a\r\nb</A></xml>",
    "<xml><A><![CDATA[a\rb]]></A></xml>",
    "<xml><A>a\x01b</A></xml>",
    "<xml><A><![CDATA[\x00]]></A></xml>",
    "<xml><A>a\ufffeb</A></xml>",
    "<xml><A>tab\tand\x85 and \x7f</A></xml>",
    "<xml><A>a > b</A></xml>",
    "<xml><A>a]]>b</A></xml>",
    "<xml><A><![CDATA[a]]><![CDATA[b]]></A></xml>",
    "<xml><A><![CDATA[a]]>b</A></xml>",
    "<xml><!-- c --><A>a</A></xml>",
    "<xml><?pi x?><A>a</A></xml>",
    " <xml><A>a</A></xml>",
    "<xml ><A>a</A></xml>",
    "<xml><A-B>a</A-B></xml>",
    "<xml><_A>a</_A><A1>b</A1></xml>",
    "<xml><A>😀 emoji and 中文</A></xml>",
    PLAIN,
]


@pytest.mark.parametrize("text", EDGES)
def test_edge_documents_give_what_the_tree_gives(text: str) -> None:
    assert _by_parse_xml(text) == _by_tree(text)


def test_random_documents_give_what_the_tree_gives() -> None:
    """Documents built from the characters that matter here, shuffled."""
    rng = random.Random(8011)
    pieces = ["<", ">", "]", "]]>", "<![CDATA[", "&", "&amp;", "\r", "\n", " ", "\x01", "a", "中"]
    for _ in range(3000):
        values = ["".join(rng.choices(pieces, k=rng.randrange(0, 5))) for _ in range(3)]
        children = "".join(
            f"<T{i}><![CDATA[{v}]]></T{i}>" if rng.random() < 0.5 else f"<T{i}>{v}</T{i}>"
            for i, v in enumerate(values)
        )
        text = f"<xml>{children}</xml>"
        assert _by_parse_xml(text) == _by_tree(text), text

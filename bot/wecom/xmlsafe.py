"""Safe XML parsing for WeCom callbacks.

Everything WeCom POSTs is XML, and the outer envelope is parsed *before* the
signature is checked, i.e. while the body is still attacker-controlled. So:

* DOCTYPE, ENTITY and external references are refused outright (defusedxml with
  ``forbid_dtd=True``): WeCom never sends them, and they are how billion-laughs
  and XXE attacks start. No legitimate payload is lost by refusing them.
* Anything expat cannot parse is a :class:`XmlError` with reason ``malformed_xml``.

The result is a flat ``dict`` of the root's children, which is the shape every
WeCom callback has (``<xml><ToUserName/>...</xml>``). The few nested elements are
folded sensibly:

* ``<SendLocationInfo><Location_X>23</Location_X>...</SendLocationInfo>`` → a dict;
* list containers (``<MemChangeList><Item>a</Item><Item>b</Item></MemChangeList>``,
  ``<PicList><item>...</item></PicList>``, ``<ApprovalNodes><ApprovalNode>...``,
  ``<ExtAttr><Item>...``) → a list, even when it holds one element, so callers
  never have to ask "one or many?";
* a tag repeated among siblings → a list under that tag.

Leaf text is returned exactly as sent (CDATA included, never stripped): a chat
message's whitespace is part of what compliance reviews.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any, Literal

import defusedxml
import defusedxml.ElementTree as SafeET

XmlErrorReason = Literal["malformed_xml", "xml_entities"]

# A container whose children are all one of these tags is a list, whatever its name.
_LIST_ITEM_TAGS = frozenset({"Item", "item"})
# WeCom's deepest payload (open_approval_change: ApprovalInfo/ApprovalNodes/
# ApprovalNode/Items/Item/ItemName) is 6 levels below the root. The flattening is
# recursive, so a hostile 100k-deep document must be a 400, not a RecursionError.
MAX_DEPTH = 32


class XmlError(ValueError):
    """The bytes are not XML we are willing to read.

    ``reason`` is ``xml_entities`` for DOCTYPE/ENTITY/external-reference
    declarations and ``malformed_xml`` for everything else. Callers map both to
    HTTP 400 (see ``bot.wecom.crypto.CallbackError``).
    """

    def __init__(self, reason: XmlErrorReason, message: str) -> None:
        super().__init__(message)
        self.reason: XmlErrorReason = reason


def parse_root(data: str | bytes) -> ET.Element:
    """Parse ``data`` into an element tree root, refusing DTDs and entities."""
    if not data.strip():
        raise XmlError("malformed_xml", "empty XML document")
    if isinstance(data, str) and "<!DOCTYPE" not in data and "<!ENTITY" not in data:
        # Decrypted text (already a str, so no encoding trick can hide a
        # declaration from this check) without a DOCTYPE cannot declare an
        # entity or reach an external resource: expat knows only the five
        # predefined entities then.  The C parser reads it ~3x faster than
        # defusedxml's pure-Python one; anything with a declaration goes there.
        try:
            return ET.fromstring(data)  # noqa: S314 - DTD-free by the check above
        except ET.ParseError as exc:
            raise XmlError("malformed_xml", f"malformed XML: {exc}") from exc
    try:
        root: ET.Element = SafeET.fromstring(
            data, forbid_dtd=True, forbid_entities=True, forbid_external=True
        )
    except defusedxml.DTDForbidden as exc:
        raise XmlError("xml_entities", "XML DOCTYPE declarations are refused") from exc
    except defusedxml.EntitiesForbidden as exc:
        raise XmlError("xml_entities", "XML ENTITY declarations are refused") from exc
    except defusedxml.ExternalReferenceForbidden as exc:
        raise XmlError("xml_entities", "XML external references are refused") from exc
    except defusedxml.DefusedXmlException as exc:
        raise XmlError("xml_entities", f"unsafe XML refused: {type(exc).__name__}") from exc
    except ET.ParseError as exc:
        raise XmlError("malformed_xml", f"malformed XML: {exc}") from exc
    except (ValueError, UnicodeError) as exc:  # e.g. bytes in an undeclared encoding
        raise XmlError("malformed_xml", f"malformed XML: {exc}") from exc
    return root


def parse_xml(data: str | bytes) -> dict[str, Any]:
    """Parse a WeCom XML document into a flat dict of the root's children.

    Values are ``str`` for leaves, ``dict`` for structured children and ``list``
    for list containers or repeated tags (see the module docstring).
    """
    if isinstance(data, str):
        flat = _flat_fields(data)
        if flat is not None:
            return flat
    return _children_to_dict(parse_root(data), depth=1)


# A message callback is ``<xml>`` and a few leaf children, each plain text or one CDATA
# section: read with two regular expressions, ~4x faster than expat and the tree (issue
# 8, item 11).  Only a document of exactly that shape is read so, and only when expat
# would give the same text: no ``&`` (no entity or character reference to resolve), no
# ``\r`` (expat normalises line ends), no character XML 1.0 forbids (expat refuses
# those), no tag repeated.  ``<!`` can only open a CDATA section here, so no DOCTYPE or
# ENTITY declaration is ever read this way; anything else — a declaration, a nested
# element, an attribute, a comment, a malformed document — goes to ``parse_root``,
# which refuses or parses it as before.
# A CDATA section ends at its first ``]]>`` (no backtracking past one), plain text at its
# first ``<``: a document matches in one way only, so the children found one by one are
# the ones the whole match saw.
_FLAT_CHILD = (
    r"<([A-Za-z_][A-Za-z0-9_]{0,63})>"
    r"(?:<!\[CDATA\[([^\]]*(?:\](?!\]>)[^\]]*)*)\]\]>|([^<&\]]*))</\1>"
)
_FLAT_DOCUMENT = re.compile(r"<xml>(?:[ \t\n]*" + _FLAT_CHILD + r")*[ \t\n]*</xml>[ \t\n]*")
_FLAT_CHILDREN = re.compile(_FLAT_CHILD)
_NOT_AS_EXPAT_READS = re.compile(r"[&\r\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


def _flat_fields(text: str) -> dict[str, str] | None:
    """The fields of a flat document (see above), or None for ``parse_root`` to read."""
    if len(text) > 65536 or not _FLAT_DOCUMENT.fullmatch(text):
        return None
    if _NOT_AS_EXPAT_READS.search(text):
        return None
    fields: dict[str, str] = {}
    # Inside the root only: ``<xml></xml>`` is no child named xml.
    for tag, cdata, plain in _FLAT_CHILDREN.findall(text, 5, text.rindex("</xml>")):
        if tag in fields:
            return None  # a repeated tag is a list: the tree decides
        fields[tag] = cdata or plain
    return fields


class _Repeated(list[Any]):
    """Marker for a tag seen more than once among siblings."""


def _children_to_dict(element: ET.Element, *, depth: int) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for child in element:
        value = _element_value(child, depth=depth + 1)
        if child.tag in result:
            existing = result[child.tag]
            if isinstance(existing, _Repeated):
                existing.append(value)
            else:
                result[child.tag] = _Repeated([existing, value])
        else:
            result[child.tag] = value
    # _Repeated is a list subclass only so we can tell "repeated tag" from
    # "a value that is itself a list"; hand out plain lists.
    return {key: list(v) if isinstance(v, _Repeated) else v for key, v in result.items()}


def _element_value(element: ET.Element, *, depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise XmlError("malformed_xml", f"XML nested deeper than {MAX_DEPTH} levels")
    children = list(element)
    if not children:
        return element.text or ""
    tags = {child.tag for child in children}
    if len(tags) == 1:
        (tag,) = tags
        # <MemChangeList><Item/>, <PicList><item/>, <ApprovalNodes><ApprovalNode/>,
        # <NotifyNodes><NotifyNode/>, <Items><Item/>: a list even with one child.
        if tag in _LIST_ITEM_TAGS or element.tag == f"{tag}s" or element.tag.endswith("List"):
            return [_element_value(child, depth=depth + 1) for child in children]
    return _children_to_dict(element, depth=depth)

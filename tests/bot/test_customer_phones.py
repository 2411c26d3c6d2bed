"""Customers found by the phone numbers advisors noted, never stored in clear.

A number comes from WeCom's follow_user entry (``remark_mobiles``) or is typed into the
remark; it is kept sealed, masked and as a keyed blind index (``bot.customers``): the
search finds the customer by the exact number in any spelling, a key other than the
deployment's gives other tokens, an edited entry drops the old number, rows stored
before the index are indexed by ``index_existing_phones``, and after a key rotation both
the rows indexed under the old key and those re-indexed under the new one are found.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

import pytest

from bot import customers, models
from bot.flows import follow_aad
from bot.keys import KEYRING
from core.crypto import Keyring
from core.settings import Settings
from tests.bot.harness import Edge, xml

NUMBER = "13766554433"
REMARK_PHONE = "13922220131"


def _contact_event(change: str, userid: str, ext: str) -> str:
    return xml(
        {
            "ToUserName": "wwtestcorp0000001",
            "FromUserName": "sys",
            "CreateTime": int(time.time()),
            "MsgType": "event",
            "Event": "change_external_contact",
            "ChangeType": change,
            "UserID": userid,
            "ExternalUserID": ext,
        }
    )


def _pair(edge: Edge) -> tuple[str, str]:
    return next((u, e) for u, fs in edge.state.follows.items() for e in fs)


async def _found(keyring: Keyring, text: str) -> list[str]:
    rows, _ = await customers.search_customers(
        query=customers.CustomerQuery(text=text), keyring=keyring
    )
    return [r.external_userid for r in rows]


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("13766554433", NUMBER),
        ("+86 137-6655-4433", NUMBER),
        ("8613766554433", NUMBER),
        ("１３７６６５５４４３３", NUMBER),  # full width, as a phone keyboard may type it
        ("0755-12345678", "075512345678"),
        ("12345", None),
        ("1376655443", None),
        ("周先生", None),
    ],
)
def test_phone_numbers_normalise(text: str, want: str | None) -> None:
    assert customers.normalise_phone(text) == want


def test_blind_index_is_keyed_per_key_and_purpose() -> None:
    one = Keyring(keys={"a": b"\x01" * 32}, active_key_id="a")
    other = Keyring(keys={"a": b"\x02" * 32}, active_key_id="a")
    token = one.blind_index(NUMBER, purpose=customers.PHONE_PURPOSE)
    assert token.startswith("a.") and NUMBER not in token
    assert token == one.blind_index(NUMBER, purpose=customers.PHONE_PURPOSE)
    # Not a plain hash an attacker could compute over every number …
    assert token.split(".")[1] not in hashlib.sha256(NUMBER.encode()).hexdigest()
    # … and worthless under another key or for another purpose.
    assert token != other.blind_index(NUMBER, purpose=customers.PHONE_PURPOSE)
    assert token != one.blind_index(NUMBER, purpose="something-else")


async def test_numbers_noted_in_wecom_find_the_customer(edge: Edge) -> None:
    keyring = edge.app[KEYRING]
    userid, ext = _pair(edge)
    follow = edge.state.follows[userid][ext]
    follow.remark_mobiles = ["+86 137 6655 4433"]
    follow.remark = f"王总 {REMARK_PHONE}"
    assert await edge.post_callback(_contact_event("add_external_contact", userid, ext)) == (
        200,
        "success",
    )
    await edge.process_all()

    assert await _found(keyring, "137-6655-4433") == [ext]
    assert await _found(keyring, REMARK_PHONE) == [ext]
    assert await _found(keyring, "13700000000") == []
    rows = await models.CustomerPhone.all().values(
        "source", "phone_bidx", "phone_masked", "phone_sealed"
    )
    assert sorted(r["source"] for r in rows) == ["remark", "remark_mobiles"]
    for r in rows:
        stored: dict[str, Any] = dict(r)
        assert all(n not in str(v) for v in stored.values() for n in (NUMBER, REMARK_PHONE))
    assert {r["phone_masked"] for r in rows} == {"137****4433", "139****0131"}
    (row,), total = await customers.search_customers(
        query=customers.CustomerQuery(text=REMARK_PHONE), keyring=keyring
    )
    assert total == 1 and set(row.phones) == {"137****4433", "139****0131"}

    # The advisor edits the contact: the old numbers no longer find them.
    follow.remark_mobiles = []
    follow.remark = "王总"
    await edge.post_callback(_contact_event("edit_external_contact", userid, ext))
    await edge.process_all()
    assert await _found(keyring, NUMBER) == []
    assert await _found(keyring, REMARK_PHONE) == []
    assert await models.CustomerPhone.all().count() == 0


async def test_existing_rows_and_a_rotated_key(settings: Settings, db: None) -> None:
    key = base64.b64decode(settings.crypto.keys["t1"].get_secret_value())
    old = Keyring(keys={"t1": key}, active_key_id="t1")
    customer = await models.Customer.create(external_userid="wmOLDcustomer01", name="王总")
    advisor = await models.Advisor.create(userid="zhangwei")
    other = await models.Customer.create(external_userid="wmOLDcustomer02", name="李总")
    # Sealed by an earlier release (masked in clear), never indexed.
    await models.FollowRelation.create(
        customer=customer,
        advisor=advisor,
        remark="王总 139****0131",
        remark_sealed=old.seal_text(
            f"王总 {REMARK_PHONE}", aad=follow_aad("wmOLDcustomer01", "zhangwei", "remark")
        ),
    )
    await models.FollowRelation.create(customer=other, advisor=advisor, remark="李总，无号码")
    # Stored before the index existed: not found until indexed.
    assert await _found(old, REMARK_PHONE) == []
    assert await customers.index_existing_phones(keyring=old, batch=1) == 2
    assert await _found(old, REMARK_PHONE) == ["wmOLDcustomer01"]
    assert await customers.index_existing_phones(keyring=old) == 0  # nothing left to do

    # A new active key: searches match both keys' tokens, re-indexing moves the rows over.
    rotated = Keyring(keys={"t1": key, "t2": b"\x07" * 32}, active_key_id="t2")
    assert await _found(rotated, REMARK_PHONE) == ["wmOLDcustomer01"]
    assert await customers.index_existing_phones(keyring=rotated) == 2
    (bidx,) = await models.CustomerPhone.all().values_list("phone_bidx", flat=True)
    assert str(bidx).startswith("t2.")
    assert await _found(rotated, REMARK_PHONE) == ["wmOLDcustomer01"]
    assert await _found(old, REMARK_PHONE) == []  # the old key alone no longer matches


async def test_the_reconcile_learns_follows_an_add_event_never_brought(edge: Edge) -> None:
    """A customer first seen in the archive: the reconcile's externalcontact/get gives
    their advisors; the relations are stored (remark masked, number indexed) so the
    advisor's book and the search know them; one stored by an event is left alone."""
    from bot.jobs import reconcile_contacts
    from bot.keys import WECOM_CLIENT

    keyring = edge.app[KEYRING]
    userid, ext = _pair(edge)
    follow = edge.state.follows[userid][ext]
    follow.remark = f"王总 {REMARK_PHONE}"
    follow.remark_mobiles = [NUMBER]
    # Seen in a message only: a row waiting for the reconcile, no relation.
    await models.Customer.create(external_userid=ext, needs_sync=True)
    assert await _found(keyring, NUMBER) == []
    assert await reconcile_contacts(edge.app[WECOM_CLIENT], keyring=keyring) >= 1
    rel = await models.FollowRelation.get(
        customer__external_userid=ext, advisor__userid=userid
    ).prefetch_related("customer", "advisor")
    assert rel.status == "active" and REMARK_PHONE not in rel.remark
    assert rel.remark.startswith("王总 139")
    assert await _found(keyring, NUMBER) == [ext]
    assert await _found(keyring, REMARK_PHONE) == [ext]
    # Once stored, the relation is the events' (a second reconcile adds nothing).
    follow.remark = "改过的备注"
    await models.Customer.filter(external_userid=ext).update(needs_sync=True)
    await reconcile_contacts(edge.app[WECOM_CLIENT], keyring=keyring)
    assert (await models.FollowRelation.get(id=rel.id)).remark.startswith("王总 139")

"""The customer directory: phone numbers findable by a keyed blind index, the search,
and what the console's customer page reads of one customer.

Customers, follow relations, messages and alerts are the edge's tables; the console
(admin) reaches them through these functions only.  A phone number is never stored
in clear: advisors note them in WeCom (``remark_mobiles`` of a follow_user entry,
numbers typed into the remark and description), and each is kept sealed, masked for
display and as ``Keyring.blind_index`` — an HMAC under a key derived from the field
key — so an exact number finds the customer and nothing else can be read from it.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from tortoise.backends.base.client import BaseDBAsyncClient
from tortoise.expressions import Q, Subquery
from tortoise.functions import Max
from tortoise.transactions import in_transaction

from bot import models
from bot.models import RelationStatus
from compliance_nlp.normalize import translate_chars
from compliance_nlp.pii import PiiMatch, find_pii, mask_pii
from core.crypto import DecryptionError, Keyring

PHONE_PURPOSE = "customer-phone"
# Where in a follow_user entry a number was noted (CustomerPhone.source).
PHONE_SOURCES = ("remark_mobiles", "remark", "description")
# A follow entry holds a handful; more is not an advisor's note.
MAX_PHONES_PER_FOLLOW = 20

_MOBILE = re.compile(r"^1[3-9]\d{9}$")
# A fixed line with its area code (010-12345678, 0755 1234 5678): 10–12 digits from 0.
_LANDLINE = re.compile(r"^0\d{9,11}$")
_PHONE_PUNCT = re.compile(r"[\s\-()（）.+]")


# ---------------------------------------------------------------- follow free text


def follow_aad(external_userid: str, userid: str, field_name: str) -> str:
    return f"follow:{external_userid}:{userid}:{field_name}"


def mask_free_text(text: str) -> str:
    """Phone, ID, bank-card numbers and e-mail addresses masked (compliance_nlp.pii)."""
    return mask_pii(text, find_pii(text)) if text else text


FOLLOW_FREE_TEXT = ("remark", "description")


def protect_follow(
    follow: dict[str, Any] | None, *, keyring: Keyring, external_userid: str, userid: str
) -> tuple[dict[str, Any] | None, dict[str, str | None]]:
    """(the follow entry with remark/description masked, their originals sealed).

    Advisors type customers' phone and ID numbers into the remark and description of
    a contact; the clear copy keeps what a colleague needs to read, masked.
    """
    if not follow:
        return follow, {}
    clear = dict(follow)
    sealed: dict[str, str | None] = {}
    for name in FOLLOW_FREE_TEXT:
        if name not in follow:
            continue
        original = str(follow.get(name) or "")
        clear[name] = mask_free_text(original)
        sealed[name] = (
            keyring.seal_text(original, aad=follow_aad(external_userid, userid, name))
            if original
            else None
        )
    return clear, sealed


def normalise_phone(text: str) -> str | None:
    """The digits a number is indexed by, or None when ``text`` is not a phone number.

    「+86 138-1234-5678」, 「8613812345678」 and 「138 1234 5678」 are one number;
    full-width digits fold (a number typed on a phone keyboard).
    """
    digits = _PHONE_PUNCT.sub("", unicodedata.normalize("NFKC", text.strip()))
    if not digits.isdigit() or not digits.isascii():
        return None
    if len(digits) == 13 and digits.startswith("86"):
        digits = digits[2:]
    if _MOBILE.match(digits) or _LANDLINE.match(digits):
        return digits
    return None


def mask_phone(phone: str) -> str:
    """「138****5678」, as compliance_nlp masks a number in a message."""
    if _MOBILE.match(phone):
        return mask_pii(phone, [PiiMatch("phone", 0, len(phone))])
    return phone[:3] + "*" * (len(phone) - 7) + phone[-4:]


def phones_in_follow(follow: Mapping[str, Any] | None) -> list[tuple[str, str]]:
    """``(source, number)`` of every number a follow entry holds, in its original text.

    ``remark_mobiles`` are numbers by definition (WeCom's 备注手机号); in the remark and
    description only what compliance_nlp recognises as a phone number counts.
    """
    if not follow:
        return []
    out: list[tuple[str, str]] = []
    for raw in follow.get("remark_mobiles") or ():
        phone = normalise_phone(str(raw)) if isinstance(raw, str | int) else None
        if phone:
            out.append(("remark_mobiles", phone))
    for source in ("remark", "description"):
        text = translate_chars(str(follow.get(source) or ""))
        for m in find_pii(text):
            if m.type == "phone" and (phone := normalise_phone(text[m.start : m.end])):
                out.append((source, phone))
    return list(dict.fromkeys(out))[:MAX_PHONES_PER_FOLLOW]


def phone_aad(external_userid: str, userid: str) -> str:
    return f"customer_phone:{external_userid}:{userid}"


async def index_follow_phones(
    *,
    conn: BaseDBAsyncClient,
    keyring: Keyring,
    customer_id: int,
    advisor_id: int,
    external_userid: str,
    userid: str,
    phones: Sequence[tuple[str, str]],
) -> int:
    """Replace the numbers one advisor noted for one customer; how many are kept.

    Called in the transaction that stores the follow entry they came from, so the
    index never says what the entry no longer does.
    """
    await (
        models.CustomerPhone.filter(customer_id=customer_id, advisor_id=advisor_id)
        .using_db(conn)
        .delete()
    )
    seen: set[tuple[str, str]] = set()
    rows = []
    for source, phone in phones:
        bidx = keyring.blind_index(phone, purpose=PHONE_PURPOSE)
        if (source, bidx) in seen:
            continue
        seen.add((source, bidx))
        rows.append(
            models.CustomerPhone(
                customer_id=customer_id,
                advisor_id=advisor_id,
                source=source,
                phone_bidx=bidx,
                phone_masked=mask_phone(phone),
                phone_sealed=keyring.seal_text(phone, aad=phone_aad(external_userid, userid)),
            )
        )
    if rows:
        await models.CustomerPhone.bulk_create(rows, using_db=conn)
    await (
        models.FollowRelation.filter(customer_id=customer_id, advisor_id=advisor_id)
        .using_db(conn)
        .update(phones_key_id=keyring.active_key_id)
    )
    return len(rows)


def _open_follow_field(rel: models.FollowRelation, name: str, keyring: Keyring) -> str:
    sealed = getattr(rel, f"{name}_sealed")
    if not sealed:
        return str(getattr(rel, name) or "")
    return keyring.open_text(
        sealed, aad=f"follow:{rel.customer.external_userid}:{rel.advisor.userid}:{name}"
    )


async def index_existing_phones(*, keyring: Keyring, batch: int = 500) -> int:
    """Index the numbers of follow relations not indexed under the active key; how many.

    Rows stored before the index existed (``phones_key_id`` NULL) and rows indexed under
    a key since rotated out.  The numbers are read back from what the row keeps: the
    sealed remark and description, and the sealed ``remark_mobiles`` of the index
    itself (WeCom's entry is not fetched again).  Safe to run twice or beside workers.
    """
    done = 0
    after = 0
    while True:
        rels = list(
            await models.FollowRelation.filter(
                Q(phones_key_id__isnull=True) | ~Q(phones_key_id=keyring.active_key_id),
                id__gt=after,
            )
            .order_by("id")
            .limit(batch)
            .prefetch_related("customer", "advisor")
        )
        if not rels:
            return done
        for rel in rels:
            after = rel.id
            external, userid = rel.customer.external_userid, rel.advisor.userid
            try:
                follow: dict[str, Any] = {
                    name: _open_follow_field(rel, name, keyring)
                    for name in ("remark", "description")
                }
                kept = await models.CustomerPhone.filter(
                    customer_id=rel.customer.id, advisor_id=rel.advisor.id, source="remark_mobiles"
                ).values_list("phone_sealed", flat=True)
                follow["remark_mobiles"] = [
                    keyring.open_text(str(s), aad=phone_aad(external, userid)) for s in kept
                ]
            except DecryptionError:
                continue  # a key this process lacks: left for a process that has it
            async with in_transaction() as conn:
                await index_follow_phones(
                    conn=conn,
                    keyring=keyring,
                    customer_id=rel.customer.id,
                    advisor_id=rel.advisor.id,
                    external_userid=external,
                    userid=userid,
                    phones=phones_in_follow(follow),
                )
            done += 1


async def do_store_missing_follows(
    *,
    conn: BaseDBAsyncClient,
    keyring: Keyring,
    customer: models.Customer,
    contact: Mapping[str, Any],
) -> int:
    """The follow_user entries of an externalcontact/get answer that have no relation yet.

    Stored as the add event would have stored them: the remark and description masked,
    their originals sealed, the numbers indexed.  A relation already stored is the
    events' to keep (a deleted advisor stays deleted until WeCom says otherwise).
    """
    from bot import service as bot_service

    stored = 0
    for entry in contact.get("follow_user") or []:
        userid = entry.get("userid") if isinstance(entry, dict) else None
        if not isinstance(userid, str) or not userid or len(userid) > 64:
            continue
        if await bot_service.follow_relation(
            conn=conn, external_userid=customer.external_userid, userid=userid
        ):
            continue
        advisor = await bot_service.upsert_advisor(conn=conn, userid=userid)
        masked, sealed = protect_follow(
            entry, keyring=keyring, external_userid=customer.external_userid, userid=userid
        )
        created = entry.get("createtime")
        at = (
            datetime.fromtimestamp(int(created), tz=UTC)
            if isinstance(created, int) and created > 0
            else datetime.now(UTC)
        )
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=advisor,
            status=RelationStatus.ACTIVE,
            at=at,
            follow=masked,
            originals_sealed=sealed,
        )
        await index_follow_phones(
            conn=conn,
            keyring=keyring,
            customer_id=customer.id,
            advisor_id=advisor.id,
            external_userid=customer.external_userid,
            userid=userid,
            phones=phones_in_follow(entry),
        )
        stored += 1
    return stored


# ------------------------------------------------------------------ the directory


@dataclass(frozen=True, slots=True)
class FollowView:
    advisor_userid: str
    advisor_name: str
    remark: str  # masked
    description: str  # masked
    status: str
    added_at: datetime | None
    state: str


@dataclass(frozen=True, slots=True)
class CustomerRow:
    """A customer as the list shows them."""

    id: int
    external_userid: str
    name: str
    corp_name: str
    contact_type: int
    gender: int
    attributes: dict[str, Any]
    created_at: datetime
    synced_at: datetime | None
    follows: tuple[FollowView, ...]
    # Masked numbers, one per distinct number.
    phones: tuple[str, ...]
    last_message_at: datetime | None


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    """What the list shows; ``advisors`` is the caller's reach (None: everyone's)."""

    text: str = ""
    advisors: frozenset[str] | None = None
    # Only customers some advisor still follows (the default list); False: all.
    active_only: bool = False


def _reach_filter(advisors: frozenset[str] | None) -> Q | None:
    """Customers some advisor of ``advisors`` still follows: a semi-join, not a join, so a
    customer with several relations counts once without DISTINCT."""
    if advisors is None:
        return None
    following = models.FollowRelation.filter(
        advisor__userid__in=sorted(advisors) or [""], status=RelationStatus.ACTIVE
    ).values("customer_id")
    return Q(id__in=Subquery(following))


def search_query(query: CustomerQuery, *, keyring: Keyring) -> Any:
    """The customers ``query`` selects, newest first (``bench/console.py`` times it bare).

    A whole phone number is looked up by its blind index alone (a masked remark never
    holds one, so the text scans would find nothing more); other text matches a name or
    a remark, each side a semi-join so one customer is one row.
    """
    q = models.Customer.all()
    text = query.text.strip()[:64]
    if text:
        phone = normalise_phone(text)
        if phone:
            tokens = keyring.blind_indexes(phone, purpose=PHONE_PURPOSE)
            noted = models.CustomerPhone.filter(phone_bidx__in=tokens).values("customer_id")
            q = q.filter(id__in=Subquery(noted))
        else:
            # Case-insensitive on both: SQLite's LIKE already folds ASCII case (its UPPER()
            # folds no more), so icontains' UPPER(CAST(…)) of every row would only double
            # the scan there; PostgreSQL needs ILIKE.
            sqlite = models.Customer._meta.db.capabilities.dialect == "sqlite"
            lookup = "contains" if sqlite else "icontains"
            remarked = models.FollowRelation.filter(**{f"remark__{lookup}": text}).values(
                "customer_id"
            )
            q = q.filter(Q(**{f"name__{lookup}": text}) | Q(id__in=Subquery(remarked)))
    reach = _reach_filter(query.advisors)
    if reach is not None:
        q = q.filter(reach)
    elif query.active_only:
        active = models.FollowRelation.filter(status=RelationStatus.ACTIVE).values("customer_id")
        q = q.filter(id__in=Subquery(active))
    return q


async def search_customers(
    *, query: CustomerQuery, keyring: Keyring, offset: int = 0, limit: int = 50
) -> tuple[list[CustomerRow], int]:
    """One page of customers and how many there are in all."""
    q = search_query(query, keyring=keyring)
    total = int(await q.count())
    ids = [
        int(i)
        for i in await q.order_by("-id").offset(offset).limit(limit).values_list("id", flat=True)
    ]
    return await customer_rows(ids=ids, advisors=query.advisors), total


async def customer_rows(
    *, ids: Sequence[int], advisors: frozenset[str] | None = None
) -> list[CustomerRow]:
    """These customers with their advisors, masked numbers and last message, in order.

    ``advisors``: the reader's reach — their last message is the last one of a
    conversation they may read (a colleague's chat times are not theirs to see).
    """
    if not ids:
        return []
    customers = {c.id: c for c in await models.Customer.filter(id__in=list(ids))}
    follows: dict[int, list[FollowView]] = {}
    # One joined read of plain values: a page of customers costs one statement here.
    for r in await models.FollowRelation.filter(customer_id__in=list(ids)).values(
        "customer_id",
        "remark",
        "description",
        "status",
        "added_at",
        "state",
        "advisor__userid",
        "advisor__name",
    ):
        follows.setdefault(int(r["customer_id"]), []).append(
            FollowView(
                advisor_userid=str(r["advisor__userid"]),
                advisor_name=str(r["advisor__name"] or ""),
                remark=str(r["remark"] or ""),
                description=str(r["description"] or ""),
                status=str(getattr(r["status"], "value", r["status"])),
                added_at=r["added_at"],
                state=str(r["state"] or ""),
            )
        )
    phones: dict[int, list[str]] = {}
    for cid, masked in await models.CustomerPhone.filter(customer_id__in=list(ids)).values_list(
        "customer_id", "phone_masked"
    ):
        if masked not in phones.setdefault(int(cid), []):
            phones[int(cid)].append(str(masked))
    messages = models.Message.filter(customer_id__in=list(ids))
    if advisors is not None:
        messages = messages.filter(advisor__userid__in=sorted(advisors) or [""])
    last = {
        int(r["customer_id"]): r["last"]
        for r in await messages.annotate(last=Max("msgtime"))
        .group_by("customer_id")
        .values("customer_id", "last")
    }
    out = []
    for cid in ids:
        c = customers.get(cid)
        if c is None:
            continue
        out.append(customer_row(c, follows.get(cid, []), phones.get(cid, []), last.get(cid)))
    return out


def customer_row(
    c: models.Customer, follows: Iterable[FollowView], phones: Iterable[str], last: Any
) -> CustomerRow:
    """A customer with their relations (active first), masked numbers and last message."""
    return CustomerRow(
        id=c.id,
        external_userid=c.external_userid,
        name=c.name,
        corp_name=c.corp_name,
        contact_type=c.contact_type,
        gender=c.gender,
        attributes=dict(c.attributes or {}),
        created_at=c.created_at,
        synced_at=c.synced_at,
        follows=tuple(sorted(follows, key=lambda f: (f.status != "active", f.advisor_userid))),
        phones=tuple(phones),
        last_message_at=_aware(last),
    )


def _aware(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's MAX() of a timestamp column comes back as text
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a time: {value!r}")
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def customer_in_reach_query(*, customer_id: int, advisors: frozenset[str] | None) -> Any:
    q = models.Customer.filter(id=customer_id)
    reach = _reach_filter(advisors)
    return q.filter(reach) if reach is not None else q


async def customer_in_reach(
    *, customer_id: int, advisors: frozenset[str] | None
) -> CustomerRow | None:
    """The customer, or None — also when outside ``advisors``' reach (same answer).

    In reach: some advisor of ``advisors`` still follows them (``customer_in_reach_query``
    says the same in SQL); read from the follow relations the row brings anyway.
    """
    rows = await customer_rows(ids=[customer_id], advisors=advisors)
    if not rows:
        return None
    if advisors is not None and not any(
        f.status == RelationStatus.ACTIVE.value and f.advisor_userid in advisors
        for f in rows[0].follows
    ):
        return None
    return rows[0]


async def customer_id_of(*, external_userid: str) -> int | None:
    row = await models.Customer.filter(external_userid=external_userid).first().values_list("id")
    return int(row[0]) if row else None


async def external_userid_of(*, customer_id: int) -> str | None:
    """The customer's WeCom external_userid (one column of one row), or None.

    Written out: a customer page's panel asks on every view, and the ORM building the
    statement cost several times reading the row."""
    conn = models.Customer._meta.db
    mark = "$1" if conn.capabilities.dialect == "postgres" else "?"
    found = await conn.execute_query_dict(
        f'SELECT "external_userid" FROM "bot_customer" WHERE "id" = {mark}',  # noqa: S608 - a placeholder only
        [customer_id],
    )
    return str(found[0]["external_userid"]) if found else None


def timeline_query(
    *,
    customer_id: int,
    advisors: frozenset[str] | None,
    before: tuple[datetime, int] | None,
    limit: int,
) -> Any:
    """The customer's messages, newest first: their chats with advisors, both sides.

    An advisor's or team lead's view holds only the conversations of advisors in their
    reach (a customer followed by two advisors has two private conversations).
    ``before`` (msgtime, id) pages back from the last message a page showed.
    """
    q = models.Message.filter(customer_id=customer_id)
    if advisors is not None:
        q = q.filter(advisor__userid__in=sorted(advisors) or [""])
    if before is not None:
        at, below = before
        q = q.filter(Q(msgtime__lt=at) | Q(msgtime=at, id__lt=below))
    return q.order_by("-msgtime", "-id").limit(limit)


async def timeline(
    *, customer_id: int, advisors: frozenset[str] | None, before_id: int | None, limit: int = 50
) -> list[models.Message]:
    """Newest first; ``before_id`` pages back (the id of the last message shown)."""
    before = None
    if before_id is not None:
        anchor = await models.Message.filter(id=before_id, customer_id=customer_id).first()
        if anchor is None:
            return []
        before = (anchor.msgtime, anchor.id)
    q = timeline_query(customer_id=customer_id, advisors=advisors, before=before, limit=limit)
    return list(await q.select_related("advisor"))


@dataclass(frozen=True, slots=True)
class TimelineLine:
    """A message as the customer page's timeline draws it (the sealed original stays)."""

    id: int
    sender_role: str
    sender_id: str
    msgtime: datetime
    msgtype: str
    roomid: str | None
    masked_text: str
    analysis: dict[str, Any]
    intent: str | None
    advisor_name: str  # "" for a message without an advisor
    # The message's review case, if one was opened on it (a message has at most one).
    case_id: int | None = None
    case_status: str = ""


async def timeline_lines(
    *, customer_id: int, advisors: frozenset[str] | None, before_id: int | None, limit: int = 50
) -> list[TimelineLine]:
    """As ``timeline``, the columns a page draws only, with each message's review case:
    one written-out statement (the advisor's name and the case joined in), not a model
    and its advisor built for every message and the cases read after."""
    conn = models.Message._meta.db
    params: list[Any] = []

    def mark(value: Any) -> str:
        params.append(value)
        return f"${len(params)}" if conn.capabilities.dialect == "postgres" else "?"

    fields = models.Message._meta.fields_map
    where = f'"m"."customer_id" = {mark(customer_id)}'
    if advisors is not None:
        marks = ", ".join(mark(a) for a in sorted(advisors) or [""])
        where += f' AND "a"."userid" IN ({marks})'
    if before_id is not None:
        anchor = (
            await models.Message.filter(id=before_id, customer_id=customer_id)
            .first()
            .values_list("msgtime", "id")
        )
        if anchor is None:
            return []
        at = fields["msgtime"].to_db_value(anchor[0], models.Message)
        where += (
            f' AND ("m"."msgtime" < {mark(at)} OR ("m"."msgtime" = {mark(at)} '
            f'AND "m"."id" < {mark(int(anchor[1]))}))'
        )
    sql = (
        'SELECT "m"."id", "m"."sender_role", "m"."sender_id", "m"."msgtime", "m"."msgtype", '  # noqa: S608 - identifiers and placeholders only
        '"m"."roomid", "m"."masked_text", "m"."analysis", "m"."intent", '
        '"a"."name" AS "advisor_name", "rc"."id" AS "case_id", "rc"."status" AS "case_status" '
        'FROM "bot_message" "m" LEFT JOIN "bot_advisor" "a" ON "a"."id" = "m"."advisor_id" '
        'LEFT JOIN "bot_review_case" "rc" ON "rc"."message_id" = "m"."id" '
        f'WHERE {where} ORDER BY "m"."msgtime" DESC, "m"."id" DESC LIMIT {mark(limit)}'
    )
    msgtime, analysis = fields["msgtime"], fields["analysis"]
    out = []
    for r in await conn.execute_query_dict(sql, params):
        data = analysis.to_python_value(r["analysis"])
        out.append(
            TimelineLine(
                id=int(r["id"]),
                sender_role=str(r["sender_role"]),
                sender_id=str(r["sender_id"]),
                # SQLite's ISO text parsed as the ORM does (naive stays naive), faster.
                msgtime=msgtime.to_python_value(
                    datetime.fromisoformat(r["msgtime"])
                    if isinstance(r["msgtime"], str)
                    else r["msgtime"]
                ),
                msgtype=str(r["msgtype"]),
                roomid=r["roomid"],
                masked_text=str(r["masked_text"] or ""),
                analysis=data if isinstance(data, dict) else {},
                intent=r["intent"],
                advisor_name=str(r["advisor_name"] or ""),
                case_id=int(r["case_id"]) if r["case_id"] is not None else None,
                case_status=str(r["case_status"] or ""),
            )
        )
    return out


async def case_states_of_messages(*, message_ids: Iterable[int]) -> dict[int, tuple[int, str]]:
    """``message id → (case id, status)`` for those of ``message_ids`` with a review case."""
    wanted = sorted(set(message_ids))
    if not wanted:
        return {}
    rows = await models.ReviewCase.filter(message_id__in=wanted).values_list(
        "message_id", "id", "status"
    )
    return {int(m): (int(c), str(st)) for m, c, st in rows}


async def cases_of_messages(*, message_ids: Iterable[int]) -> dict[int, models.ReviewCase]:
    wanted = sorted(set(message_ids))
    if not wanted:
        return {}
    rows = await models.ReviewCase.filter(message_id__in=wanted)
    return {int(r.message_id): r for r in rows}  # type: ignore[attr-defined]


def alerts_query(*, external_userid: str, advisors: frozenset[str] | None, limit: int) -> Any:
    q = models.Alert.filter(external_userid=external_userid)
    if advisors is not None:
        q = q.filter(advisor_userid__in=sorted(advisors) or [""])
    return q.order_by("-created_at", "-id").limit(limit)


async def alerts_of(
    *, external_userid: str, advisors: frozenset[str] | None, limit: int = 20
) -> list[models.Alert]:
    """The customer's alerts (churn, redemption intent, complaints …), newest first."""
    return list(await alerts_query(external_userid=external_userid, advisors=advisors, limit=limit))


@dataclass(frozen=True, slots=True)
class PhoneOriginal:
    advisor_userid: str
    source: str
    phone: str


async def phone_originals(*, customer_id: int, keyring: Keyring) -> list[PhoneOriginal]:
    """The customer's numbers in clear, for an authorised reader who stated why."""
    rows = await models.CustomerPhone.filter(customer_id=customer_id).prefetch_related(
        "customer", "advisor"
    )
    out = []
    for r in sorted(rows, key=lambda r: (r.advisor.userid, r.source, r.id)):
        phone = keyring.open_text(
            r.phone_sealed, aad=phone_aad(r.customer.external_userid, r.advisor.userid)
        )
        out.append(PhoneOriginal(advisor_userid=r.advisor.userid, source=r.source, phone=phone))
    return out

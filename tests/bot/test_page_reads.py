"""The console's lean reads hold to the ORM queries they stand in for: same rows, same order.

The customer page's timeline and the case page's conversation read plain values (or
written-out SQL) instead of a model per message; whatever the reach, the paging cursor,
ties on ``msgtime``, a group chat or an edge of the conversation, they must show the
messages the model queries select.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot import customers as bot_customers
from bot import models
from bot import service as bot_service

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


async def _seed() -> tuple[models.Customer, list[models.Message]]:
    a = await models.Advisor.create(userid="adv-a", name="甲经理")
    b = await models.Advisor.create(userid="adv-b", name="")
    c = await models.Customer.create(external_userid="wmC1", name="周先生")
    other = await models.Customer.create(external_userid="wmC2", name="吴女士")
    made: list[models.Message] = []
    n = 0

    async def say(
        adv: models.Advisor, cust: models.Customer, role: str, at: datetime, room: str | None
    ) -> None:
        nonlocal n
        n += 1
        made.append(
            await models.Message.create(
                msgid=f"m{n}",
                source="archive",
                direction="advisor_to_customer" if role == "advisor" else "customer_to_advisor",
                sender_id=adv.userid if role == "advisor" else cust.external_userid,
                sender_role=role,
                receiver_ids=[],
                roomid=room,
                msgtime=at,
                msgtype="text",
                masked_text=f"第{n}句",
                intent="complaint" if n % 5 == 0 else None,
                analysis={"violations": [], "pii": [], "n": n},
                customer=cust,
                advisor=adv,
            )
        )

    for i in range(24):
        # Pairs of lines share a second: the id breaks the tie, both ways.
        at = T0 + timedelta(seconds=30 * (i // 2))
        await say(a, c, "advisor" if i % 2 else "customer", at, None)
    for i in range(6):
        await say(b, c, "advisor" if i % 2 else "customer", T0 + timedelta(minutes=i), None)
        await say(a, other, "customer", T0 + timedelta(minutes=i), None)
        await say(a, c, "advisor", T0 + timedelta(minutes=i), "room-1")
    return c, made


def _plain(m: models.Message) -> tuple[object, ...]:
    return (m.id, m.sender_role, m.sender_id, m.msgtime, m.msgtype, m.masked_text)


async def test_conversation_lines_match_the_model_query(db: None) -> None:
    _, made = await _seed()
    for anchor in made:
        for before, after in ((12, 6), (3, 0), (0, 2)):
            prior, following = await bot_service.conversation_around(
                message=anchor, before=before, after=after
            )
            lines_prior, lines_following = await bot_service.conversation_lines_around(
                message=anchor, before=before, after=after
            )
            assert [_plain(m) for m in prior] == [
                (x.id, x.sender_role, x.sender_id, x.msgtime, x.msgtype, x.masked_text)
                for x in lines_prior
            ], (anchor.msgid, before)
            assert [_plain(m) for m in following] == [
                (x.id, x.sender_role, x.sender_id, x.msgtime, x.msgtype, x.masked_text)
                for x in lines_following
            ], (anchor.msgid, after)


async def test_timeline_lines_match_the_model_query(db: None) -> None:
    c, made = await _seed()
    for reach in (None, frozenset({"adv-a"}), frozenset({"adv-b"}), frozenset()):
        for before_id in (None, made[20].id, made[3].id, made[-1].id, 10**9):
            for limit in (5, 31):
                full = await bot_customers.timeline(
                    customer_id=c.id, advisors=reach, before_id=before_id, limit=limit
                )
                lean = await bot_customers.timeline_lines(
                    customer_id=c.id, advisors=reach, before_id=before_id, limit=limit
                )
                want = [
                    (
                        m.id,
                        m.sender_role,
                        m.sender_id,
                        m.msgtime,
                        m.msgtype,
                        m.roomid,
                        m.masked_text,
                        m.analysis,
                        m.intent,
                        m.advisor.name if m.advisor is not None else "",
                    )
                    for m in full
                ]
                got = [
                    (
                        x.id,
                        x.sender_role,
                        x.sender_id,
                        x.msgtime,
                        x.msgtype,
                        x.roomid,
                        x.masked_text,
                        x.analysis,
                        x.intent,
                        x.advisor_name,
                    )
                    for x in lean
                ]
                assert got == want, (reach, before_id, limit)
    some = [m.id for m in made[:6]]
    case = await models.ReviewCase.create(
        message_id=some[1], advisor_userid="adv-a", categories=["x"], severity="violation"
    )
    assert await bot_customers.case_states_of_messages(message_ids=some) == {
        some[1]: (case.id, case.status)
    }

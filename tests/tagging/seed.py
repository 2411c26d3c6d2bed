"""A small tagged customer book: two advisors, their customers, a library, tags with reasons."""

from __future__ import annotations

from dataclasses import dataclass

from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from core.audit import Actor
from tagging import flows, service
from tagging.models import Tag, TagSource
from tagging.schemas import GroupIn, TagIn

OPS = Actor("operator", "1", "运营小王")


@dataclass
class Book:
    tags: dict[str, Tag]
    customers: dict[str, int]  # external_userid -> row id


async def follow(ext: str, name: str, advisor: str, attrs: dict | None = None) -> int:
    async with in_transaction() as conn:
        customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
        await (
            bot_models.Customer.filter(id=customer.id)
            .using_db(conn)
            .update(name=name, attributes=attrs or {})
        )
        adv = await bot_service.upsert_advisor(conn=conn, userid=advisor)
        await bot_service.upsert_follow(
            conn=conn,
            customer=customer,
            advisor=adv,
            status=bot_models.RelationStatus.ACTIVE,
            at=bot_service.now(),
        )
        return int(customer.id)


async def book() -> Book:
    """zhao follows 3 customers, qian 2; tags 高净值 / 关注养老 / 已退订 / 养老客群 in 客户画像."""
    group = await flows.do_create_group(
        spec=GroupIn(name="客户画像", colour="#AA3300", description="资产与兴趣"), actor=OPS
    )
    tags = {}
    for name, colour in (
        ("高净值", "#C0392B"),
        ("关注养老", "#2E86C1"),
        ("已退订", "#7F8C8D"),
        ("养老客群", "#27AE60"),  # on nobody yet: what rules add
    ):
        tags[name] = await flows.do_create_tag(
            spec=TagIn(group_id=group.id, name=name, colour=colour), actor=OPS
        )
    people = [
        (
            "wmBOOK00000000000000001",
            "周大福",
            "adv-zhao",
            {"risk_level": "C4"},
            ["高净值", "关注养老"],
        ),
        ("wmBOOK00000000000000002", "吴小姐", "adv-zhao", {"risk_level": "C2"}, ["高净值"]),
        ("wmBOOK00000000000000003", "郑先生", "adv-zhao", {"risk_level": "C5"}, ["已退订"]),
        ("wmBOOK00000000000000004", "王老板", "adv-qian", {"risk_level": "C3"}, ["高净值"]),
        ("wmBOOK00000000000000005", "冯女士", "adv-qian", {"risk_level": "C1"}, ["关注养老"]),
    ]
    customers = {}
    for ext, name, advisor, attrs, names in people:
        customers[ext] = await follow(ext, name, advisor, attrs)
        for n in names:
            async with in_transaction() as conn:
                tag = await service.get_tag(conn=conn, tag_id=tags[n].id)
                assert tag is not None
                await flows.tag_customer(
                    conn=conn,
                    external_userid=ext,
                    tag=tag,
                    source=TagSource.MANUAL,
                    applied_by="operator:1",
                    reason={"note": "电话回访确认"},
                )
    return Book(tags=tags, customers=customers)

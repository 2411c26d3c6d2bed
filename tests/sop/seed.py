"""Rows the campaign tests build on: a small tag library and customers with attributes."""

from __future__ import annotations

from typing import Any

from tortoise.transactions import in_transaction

from bot import models as bot_models
from bot import service as bot_service
from core.audit import Actor
from sop.schemas import CampaignIn
from tagging import flows
from tagging.models import TagSource
from tagging.schemas import GroupIn, TagIn

OPS = Actor("operator", "7", "运营小王")
OPS2 = Actor("operator", "8", "运营小李")
REVIEWER = Actor("operator", "9", "合规老周")

CUSTOMERS: list[tuple[str, str, dict[str, Any], list[str]]] = [
    (
        "wmSOP00000000000000001",
        "张三丰",
        {"risk_level": "C4", "maturity_date": "2026-12-10"},
        ["高净值"],
    ),
    (
        "wmSOP00000000000000002",
        "李四",
        {"risk_level": "C2", "maturity_date": "2026-12-20"},
        ["高净值"],
    ),
    ("wmSOP00000000000000003", "王五", {"risk_level": "C5"}, ["已退订"]),
    ("wmSOP00000000000000004", "赵六", {"risk_level": "C1"}, []),
]


async def seed_customers() -> dict[str, int]:
    """Four customers, tags 高净值 / 已退订 / 已购买; returns tag ids by name."""
    group = await flows.do_create_group(spec=GroupIn(name="画像"), actor=OPS)
    tags = {}
    for name in ("高净值", "已退订", "已购买"):
        tags[name] = (
            await flows.do_create_tag(spec=TagIn(group_id=group.id, name=name), actor=OPS)
        ).id
    async with in_transaction() as conn:
        for ext, name, attrs, names in CUSTOMERS:
            customer = await bot_service.upsert_customer(conn=conn, external_userid=ext)
            await (
                bot_models.Customer.filter(id=customer.id)
                .using_db(conn)
                .update(name=name, attributes=attrs)
            )
            for n in names:
                tag = await flows.service.get_tag(conn=conn, tag_id=tags[n])
                assert tag is not None
                await flows.tag_customer(
                    conn=conn,
                    external_userid=ext,
                    tag=tag,
                    source=TagSource.IMPORT,
                    applied_by="import:test",
                )
    return tags


def maturity_spec(**overrides: Any) -> CampaignIn:
    """A maturity reminder: 7 days before maturity, a reminder then a mass-send."""
    raw: dict[str, Any] = {
        "name": "到期提醒",
        "segment": "bank",
        "trigger": {"kind": "attribute_date", "attribute": "maturity_date", "days_before": 7},
        "audience": 'NOT tag:"已退订"',
        "reentry": "after_exit",
        "exit_conditions": [{"kind": "replied"}, {"kind": "opted_out"}, {"kind": "goal"}],
        "goal": {"intent": "purchase_intent"},
        "product": {"code": "FP2025", "name": "稳享理财 365 天", "risk_level": "R2"},
        "steps": [
            {
                "name": "提醒客户经理",
                "offset_days": 0,
                "at_time": "10:00",
                "delivery": "reminder",
                "content": {
                    "kind": "text",
                    "text": "{customer_name}您好，您持有的{product_name}将于{maturity_date}到期，"
                    "如需了解续作安排可随时联系我。",
                },
            },
            {
                "name": "到期前一天群发",
                "anchor": "entry",
                "offset_days": 6,
                "at_time": "10:00",
                "skip_weekends": True,
                "skip_holidays": True,
                "delivery": "mass_send",
                "content": {
                    "kind": "link",
                    "text": "{customer_name}您好，产品明天到期，资金将按合同约定划回。",
                    "link": {
                        "title": "到期资金安排说明",
                        "url": "https://bank.example.com/maturity",
                        "desc": "到期资金将按合同约定划回您的账户。",
                    },
                },
            },
        ],
    }
    raw.update(overrides)
    return CampaignIn.model_validate(raw)

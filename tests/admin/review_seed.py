"""Review cases as the pipeline leaves them: advisors, customers, analysed messages
(masked text, sealed original, findings from the real compliance_nlp), open cases.

Rows are written directly (a factory), analysed by the shipped analyser with the turns
before each line as context, so spans, evidence and PII masking are the real ones.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot import models
from bot.flows import message_aad
from compliance_nlp.analyze import analyze
from compliance_nlp.types import Turn
from core.crypto import Keyring

T0 = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


@dataclass
class Seeded:
    messages: list[models.Message]
    cases: list[models.ReviewCase]


async def advisor(
    userid: str, name: str, *, department: str = "", manager: str | None = None
) -> models.Advisor:
    row, _ = await models.Advisor.get_or_create(
        userid=userid,
        defaults={"name": name, "department": department, "manager_userid": manager},
    )
    return row


async def customer(external_userid: str, name: str) -> models.Customer:
    row, _ = await models.Customer.get_or_create(
        external_userid=external_userid, defaults={"name": name}
    )
    return row


async def conversation(
    *,
    keyring: Keyring,
    advisor_row: models.Advisor,
    customer_row: models.Customer,
    turns: Sequence[tuple[str, str]],
    start: datetime = T0,
    step: timedelta = timedelta(minutes=1),
    msgid_prefix: str = "m",
    analysis_override: dict[int, dict[str, Any]] | None = None,
) -> Seeded:
    """Store ``turns`` ((role, text), oldest first) as one advisor–customer chat.

    An advisor line with findings opens a case, as the pipeline does.
    ``analysis_override`` replaces the analysis of the turn at that index (a finding
    the shipped model does not make yet, e.g. one decided by the context).
    """
    out = Seeded(messages=[], cases=[])
    context: list[Turn] = []
    for i, (role, text) in enumerate(turns):
        at = start + step * i
        msgid = f"{msgid_prefix}-{i}"
        sender = advisor_row.userid if role == "advisor" else customer_row.external_userid
        receiver = customer_row.external_userid if role == "advisor" else advisor_row.userid
        record = {
            "msgid": msgid,
            "action": "send",
            "from": sender,
            "tolist": [receiver],
            "roomid": "",
            "msgtime": int(at.timestamp() * 1000),
            "msgtype": "text",
            "text": {"content": text},
        }
        analysis = analyze(text, "advisor" if role == "advisor" else "customer", context=context)
        data = analysis.to_dict()
        if analysis_override and i in analysis_override:
            data = {**data, **analysis_override[i]}
        findings = data["violations"]
        message = await models.Message.create(
            msgid=msgid,
            source="archive",
            direction="advisor_to_customer" if role == "advisor" else "customer_to_advisor",
            sender_id=sender,
            sender_role=role,
            receiver_ids=[receiver],
            roomid=None,
            msgtime=at,
            msgtype="text",
            masked_text=data["masked_text"],
            original_sealed=keyring.seal_text(
                json.dumps({"record": record}, ensure_ascii=False),
                aad=message_aad("archive", msgid),
            ),
            sentiment=data["sentiment"],
            has_violation=any(f["severity"] == "violation" for f in findings),
            analysis=data,
            customer=customer_row,
            advisor=advisor_row,
        )
        out.messages.append(message)
        if role == "advisor" and findings:
            case = await models.ReviewCase.create(
                message=message,
                advisor_userid=advisor_row.userid,
                categories=sorted({f["category"] for f in findings}),
                severity="violation" if message.has_violation else "review",
            )
            # The case opened when the message was stored (the queue's age column).
            await models.ReviewCase.filter(id=case.id).update(created_at=at)
            case.created_at = at
            out.cases.append(case)
        context.append(Turn("advisor" if role == "advisor" else "customer", data["masked_text"]))
    return out

"""The console's pages against the bare SQL they need, on a bank-sized database.

    .venv/bin/python bench/console.py [--messages 1000000] [--customers 100000]
                                      [--cases 20000] [--runs 30]
                                      [--pg-server postgres://postgres@127.0.0.1:5432/postgres]
                                      [--data-dir var/bench-console] [--keep]
                                      [--pg-db NAME] [--reuse] [--only TEXT] [--skip-sqlite]

Seeding a full-size database takes minutes (SQLite ~2.5, PostgreSQL ~3, the rollups
~1.5 each); ``--keep --pg-db NAME`` keeps both databases (and the throwaway field key
they were sealed with, in the data folder) and ``--reuse`` times against them again —
migrations newer than the seed are applied first, as at any start.

Seeds advisors in teams, customers with their follow relations and a phone number each
(sealed, masked, blind-indexed as the edge stores them), messages (both sides, masked
text, analysis, intents), review cases on flagged advisor lines and alerts — in bulk,
streamed in batches with a progress bar — then rebuilds the dashboard's rollups with
the product's own ``siyu dashboard rebuild``.  Then, in the same run, it times each
page through the real admin app over HTTP (a signed-in compliance reviewer: session,
guard, queries, template) and the bare SQL that page needs (the same statements,
hand-written, on the same connection) — both over the same ids after a warming pass,
in turns — and prints each page's p10/p50/p95, the SQL's, the ratio of the medians
(target <= 2x) and of the 10th percentiles.  SQLite always; PostgreSQL too when
``--pg-server`` names a server (a throwaway database, dropped afterwards).  Figures are
printed, never asserted.
"""

# ruff: noqa: E501 - the bare SQL reads best one statement a line, as a DBA would type it

from __future__ import annotations

import argparse
import asyncio
import json
import random
import re
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # `python bench/x.py` puts bench/ first, not the repo
    sys.path.insert(0, str(ROOT))

from bench._common import BenchSecrets, pg_admin  # noqa: E402 - after the path fix above

BATCH = 5_000
NOW = datetime.now(UTC).replace(microsecond=0)
SPAN = timedelta(days=60)
CATEGORIES = [
    "guaranteed_return",
    "misleading_promotion",
    "off_book_dealing",
    "improper_inducement",
    "suitability_evasion",
    "account_custody",
    "insider_tip",
    "disparagement",
]
INTENTS = ["product_inquiry", "purchase_intent", "redemption_intent", "complaint", "chitchat"]
CUSTOMER_LINES = [
    "这个理财到期本金能拿回来吧？",
    "最近有什么稳健的产品推荐吗",
    "我想把之前买的基金赎回了",
    "定投扣款日能改吗",
    "你们的服务太差了，我要投诉",
    "好的，谢谢",
]
ADVISOR_LINES = [
    "您好，我把产品说明书发您，请仔细阅读风险揭示",
    "可以的，我发您操作步骤",
    "好的，有问题随时找我",
    "这款产品风险等级R2，适合稳健型客户",
]
FLAGGED_LINE = ("您放心，这个产品保本保收益，年化5%稳赚", 7, 12, "保本保收益")
SURNAMES = "王李张刘陈杨赵黄周吴徐孙胡朱高林何郭马罗"
GIVEN = ["伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟"]
PASSWORD = "bench-password-not-a-secret-" + uuid.uuid4().hex


# ------------------------------------------------------------------ seeding


def _ph(dialect: str, k: int) -> str:
    if dialect == "postgres":
        return ", ".join(f"${i}" for i in range(1, k + 1))
    return ", ".join("?" * k)


def _at(rng: random.Random) -> datetime:
    return NOW - timedelta(seconds=rng.randint(0, int(SPAN.total_seconds())))


async def _insert(
    conn: Any, dialect: str, table: str, columns: Sequence[str], rows: list[Any]
) -> None:
    if not rows:
        return
    cols = ", ".join(f'"{c}"' for c in columns)
    sql = f'INSERT INTO "{table}" ({cols}) VALUES ({_ph(dialect, len(columns))})'
    await conn.execute_many(sql, rows)


async def _seed(conn: Any, dialect: str, args: argparse.Namespace, keyring: Any) -> dict[str, Any]:
    from tqdm import tqdm

    from bot.customers import PHONE_PURPOSE, mask_phone, phone_aad

    rng = random.Random(11)
    n_customers, n_messages, n_cases = args.customers, args.messages, args.cases
    n_advisors = max(10, n_customers // 100)
    n_leads = max(2, n_advisors // 10)
    jdump = json.dumps if dialect == "sqlite" else (lambda v: json.dumps(v))
    # Advisors (ids 1..n), the first n_leads lead the others in turn.
    advisors = []
    for i in range(n_advisors):
        manager = None if i < n_leads else f"adv-{i % n_leads:04d}"
        advisors.append(
            (NOW, NOW, f"adv-{i:04d}", f"{SURNAMES[i % 20]}经理{i}", str(i % 9), manager, "active")
        )
    await _insert(
        conn,
        dialect,
        "bot_advisor",
        ("created_at", "updated_at", "userid", "name", "department", "manager_userid", "status"),
        advisors,
    )
    bar = tqdm(
        total=n_customers, unit=" customers", desc=f"seed {dialect} customers", file=sys.stderr
    )
    owner: list[int] = []  # customer index -> advisor id (1-based)
    for start in range(0, n_customers, BATCH):
        customers, follows, phones = [], [], []
        for i in range(start, min(n_customers, start + BATCH)):
            cid = i + 1
            adv = rng.randrange(n_advisors) + 1
            owner.append(adv)
            name = rng.choice(SURNAMES) + rng.choice(GIVEN) + rng.choice(GIVEN)
            ext = f"wmBENCH{i:015d}"
            added = _at(rng)
            customers.append((added, added, ext, name, 1, "", rng.randint(0, 2), jdump({}), False))
            follows.append((added, added, f"{name} 稳健型", "", added, "", "active", adv, cid))
            phone = f"13{rng.randint(0, 999_999_999):09d}"
            userid = f"adv-{adv - 1:04d}"
            phones.append(
                (
                    added,
                    added,
                    "remark_mobiles",
                    keyring.blind_index(phone, purpose=PHONE_PURPOSE),
                    mask_phone(phone),
                    keyring.seal_text(phone, aad=phone_aad(ext, userid)),
                    adv,
                    cid,
                )
            )
        await _insert(
            conn,
            dialect,
            "bot_customer",
            (
                "created_at",
                "updated_at",
                "external_userid",
                "name",
                "contact_type",
                "corp_name",
                "gender",
                "attributes",
                "needs_sync",
            ),
            customers,
        )
        await _insert(
            conn,
            dialect,
            "bot_follow_relation",
            (
                "created_at",
                "updated_at",
                "remark",
                "description",
                "added_at",
                "state",
                "status",
                "advisor_id",
                "customer_id",
            ),
            follows,
        )
        await _insert(
            conn,
            dialect,
            "bot_customer_phone",
            (
                "created_at",
                "updated_at",
                "source",
                "phone_bidx",
                "phone_masked",
                "phone_sealed",
                "advisor_id",
                "customer_id",
            ),
            phones,
        )
        bar.update(len(customers))
    bar.close()

    # Messages: conversations of ~n_messages/n_customers turns, both sides, in time order.
    flagged_every = max(1, (n_messages // 2) // max(1, n_cases))
    msg_cols = (
        "created_at",
        "updated_at",
        "msgid",
        "source",
        "direction",
        "sender_id",
        "sender_role",
        "receiver_ids",
        "roomid",
        "msgtime",
        "msgtype",
        "action",
        "masked_text",
        "original_sealed",
        "intent",
        "sentiment",
        "has_violation",
        "analysis",
        "customer_id",
        "advisor_id",
    )
    case_rows: list[tuple[Any, ...]] = []
    statuses = ["open"] * 6 + ["escalated"] + ["confirmed"] * 2 + ["false_positive"]
    bar = tqdm(total=n_messages, unit=" messages", desc=f"seed {dialect} messages", file=sys.stderr)
    per = max(2, n_messages // n_customers)
    mid = 0
    advisor_turns = 0
    while mid < n_messages:
        rows = []
        while len(rows) < BATCH and mid < n_messages:
            cidx = (mid // per) % n_customers
            cid = cidx + 1
            adv = owner[cidx]
            userid = f"adv-{adv - 1:04d}"
            ext = f"wmBENCH{cidx:015d}"
            turn = mid % per
            at = (
                NOW
                - SPAN
                + timedelta(seconds=(cidx * 613 % int(SPAN.total_seconds() - 3600)) + turn * 60)
            )
            flagged = False
            if turn % 2 == 0:
                text = rng.choice(CUSTOMER_LINES)
                intent = rng.choice(INTENTS)
                analysis = {"intent": intent, "sentiment": "neutral", "violations": [], "pii": []}
                row = ("customer", "customer_to_advisor", ext, [userid], intent)
            else:
                advisor_turns += 1
                flagged = advisor_turns % flagged_every == 0 and len(case_rows) < n_cases
                if flagged:
                    text, start, end, evidence = FLAGGED_LINE
                    category = rng.choice(CATEGORIES)
                    analysis = {
                        "intent": None,
                        "sentiment": "neutral",
                        "violations": [
                            {
                                "category": category,
                                "severity": "violation",
                                "source": "rule",
                                "rule_id": "bench-1",
                                "score": 0.97,
                                "basis": "《证券期货经营机构私募资产管理业务管理办法》",
                                "evidence": evidence,
                                "start": start,
                                "end": end,
                            }
                        ],
                        "pii": [],
                    }
                else:
                    text = rng.choice(ADVISOR_LINES)
                    analysis = {"intent": None, "sentiment": "neutral", "violations": [], "pii": []}
                row = ("advisor", "advisor_to_customer", userid, [ext], None)
            role, direction, sender, receivers, intent = row
            mid += 1
            rows.append(
                (
                    at,
                    at,
                    f"bench-{mid}",
                    "archive",
                    direction,
                    sender,
                    role,
                    jdump(receivers),
                    None,
                    at,
                    "text",
                    "send",
                    text,
                    None,
                    intent,
                    "neutral",
                    flagged,
                    jdump(analysis),
                    cid,
                    adv,
                )
            )
            if flagged:
                status = rng.choice(statuses)
                decided = (
                    at + timedelta(hours=rng.randint(1, 72))
                    if status in ("confirmed", "false_positive")
                    else None
                )
                case_rows.append(
                    (
                        at,
                        at,
                        mid,
                        userid,
                        jdump([analysis["violations"][0]["category"]]),
                        "violation",
                        status,
                        "",
                        "",
                        "",
                        decided,
                    )
                )
        await _insert(conn, dialect, "bot_message", msg_cols, rows)
        bar.update(len(rows))
    bar.close()
    await _insert(
        conn,
        dialect,
        "bot_review_case",
        (
            "created_at",
            "updated_at",
            "message_id",
            "advisor_userid",
            "categories",
            "severity",
            "status",
            "assignee_name",
            "decision_comment",
            "decided_by",
            "decided_at",
        ),
        case_rows,
    )
    alerts = []
    for i in range(max(1, n_customers // 10)):
        cidx = rng.randrange(n_customers)
        kind = rng.choice(["churn", "complaint", "redemption_intent"])
        at = _at(rng)
        alerts.append(
            (
                at,
                at,
                f"{kind}:bench-{i}",
                kind,
                f"adv-{owner[cidx] - 1:04d}",
                f"adv-{owner[cidx] - 1:04d}",
                f"wmBENCH{cidx:015d}",
                jdump({}),
                "open",
            )
        )
    await _insert(
        conn,
        dialect,
        "bot_alert",
        (
            "created_at",
            "updated_at",
            "idem_key",
            "kind",
            "recipient_userid",
            "advisor_userid",
            "external_userid",
            "detail",
            "status",
        ),
        alerts,
    )
    if dialect == "postgres":
        await conn.execute_script("ANALYZE")
    else:
        await conn.execute_script("ANALYZE")
    return {
        "customers": n_customers,
        "advisors": n_advisors,
        "cases": len(case_rows),
        "case_ids": list(range(1, len(case_rows) + 1)),
        "top_advisor": "adv-0011",
    }


# ------------------------------------------------------------------ the bare SQL


def _sql(dialect: str, sql: str) -> str:
    """``?`` placeholders, as PostgreSQL numbers them."""
    if dialect != "postgres":
        return sql
    counter = iter(range(1, 10_000))
    return re.sub(r"\?", lambda _m: f"${next(counter)}", sql)


def _has_category(dialect: str, category: str) -> str:
    if dialect == "postgres":
        return f"jsonb_exists(c.categories, '{category}')"
    return f"EXISTS (SELECT 1 FROM json_each(c.categories) WHERE value = '{category}')"


async def _bare_queue(conn: Any, d: str, *, category: str = "", advisor: str = "") -> None:
    """The queue's reads: count, a page with its messages and customers, and each facet
    counted with its own filter left out (as the page's counts beside each choice)."""
    pending = not category  # the default work list; the filtered view shows every status

    def where(*, without: str = "", cat: str | None = None) -> tuple[str, list[Any]]:
        conds, params = [], []
        if pending and without != "status":
            conds.append("c.status IN ('open', 'escalated')")
        chosen = category if cat is None else cat
        if chosen and without != "category":
            conds.append(_has_category(d, chosen))
        if advisor and without != "advisor":
            conds.append("c.advisor_userid = ?")
            params.append(advisor)
        return " AND ".join(conds) or "1=1", params

    q = conn.execute_query_dict
    w, params = where()
    await q(_sql(d, f"SELECT COUNT(*) AS n FROM bot_review_case c WHERE {w}"), params)
    page = await q(
        _sql(
            d, f"SELECT c.* FROM bot_review_case c WHERE {w} ORDER BY c.created_at, c.id LIMIT 50"
        ),
        params,
    )
    mids = [r["message_id"] for r in page] or [0]
    msgs = await q(
        _sql(d, f"SELECT * FROM bot_message WHERE id IN ({', '.join('?' * len(mids))})"), mids
    )
    cids = [m["customer_id"] for m in msgs if m["customer_id"]] or [0]
    await q(_sql(d, f"SELECT * FROM bot_customer WHERE id IN ({', '.join('?' * len(cids))})"), cids)
    for facet, without in (
        ("status", "status"),
        ("severity", "severity"),
        ("advisor_userid", "advisor"),
    ):
        fw, fp = where(without=without)
        await q(
            _sql(
                d,
                f"SELECT {facet}, COUNT(*) AS n FROM bot_review_case c WHERE {fw} GROUP BY {facet}",
            ),
            fp,
        )
    for cat in CATEGORIES:
        cw, cp = where(cat=cat)
        await q(_sql(d, f"SELECT COUNT(*) AS n FROM bot_review_case c WHERE {cw}"), cp)
    # Teams: every advisor's count under the other filters, and who leads each advisor.
    teams = await q(
        _sql(
            d,
            f"SELECT advisor_userid, COUNT(*) AS n FROM bot_review_case c WHERE {w} GROUP BY advisor_userid",
        ),
        params,
    )
    ids = [t["advisor_userid"] for t in teams] or [""]
    await q(
        _sql(
            d,
            f"SELECT userid, name, department, manager_userid FROM bot_advisor WHERE userid IN ({', '.join('?' * len(ids))})",
        ),
        ids,
    )
    users = await q("SELECT DISTINCT advisor_userid FROM bot_review_case")
    ids = [u["advisor_userid"] for u in users] or [""]
    found = await q(
        _sql(
            d,
            f"SELECT userid, name, department, manager_userid FROM bot_advisor WHERE userid IN ({', '.join('?' * len(ids))})",
        ),
        ids,
    )
    leaders = sorted({f["manager_userid"] for f in found if f["manager_userid"]}) or [""]
    await q(
        _sql(
            d,
            f"SELECT userid, name, department, manager_userid FROM bot_advisor WHERE userid IN ({', '.join('?' * len(leaders))})",
        ),
        leaders,
    )


async def _bare_case(conn: Any, d: str, case_id: int) -> None:
    q = conn.execute_query_dict
    case = (await q(_sql(d, "SELECT * FROM bot_review_case WHERE id = ?"), [case_id]))[0]
    m = (await q(_sql(d, "SELECT * FROM bot_message WHERE id = ?"), [case["message_id"]]))[0]
    await q(_sql(d, "SELECT * FROM bot_customer WHERE id = ?"), [m["customer_id"]])
    await q(_sql(d, "SELECT * FROM bot_advisor WHERE id = ?"), [m["advisor_id"]])
    pair = "roomid IS NULL AND advisor_id = ? AND customer_id = ?"
    await q(
        _sql(
            d,
            f"SELECT * FROM bot_message WHERE {pair} AND (msgtime < ? OR (msgtime = ? AND id < ?)) ORDER BY msgtime DESC, id DESC LIMIT 12",
        ),
        [m["advisor_id"], m["customer_id"], m["msgtime"], m["msgtime"], m["id"]],
    )
    await q(
        _sql(
            d,
            f"SELECT * FROM bot_message WHERE {pair} AND (msgtime > ? OR (msgtime = ? AND id > ?)) ORDER BY msgtime, id LIMIT 6",
        ),
        [m["advisor_id"], m["customer_id"], m["msgtime"], m["msgtime"], m["id"]],
    )
    adv = await q(
        _sql(
            d, "SELECT userid, name, department, manager_userid FROM bot_advisor WHERE userid = ?"
        ),
        [case["advisor_userid"]],
    )
    if adv and adv[0]["manager_userid"]:
        # The page names the advisor's team lead too.
        await q(
            _sql(
                d,
                "SELECT userid, name, department, manager_userid FROM bot_advisor WHERE userid = ?",
            ),
            [adv[0]["manager_userid"]],
        )
    await q(
        _sql(
            d,
            "SELECT * FROM bot_review_case WHERE advisor_userid = ? AND id <> ? ORDER BY created_at DESC, id DESC LIMIT 10",
        ),
        [case["advisor_userid"], case_id],
    )
    await q(
        _sql(d, "SELECT * FROM core_audit_log WHERE target = ? ORDER BY id DESC LIMIT 20"),
        [f"review_case:{case_id}"],
    )
    await q("SELECT * FROM admin_operator")


async def _bare_customer(conn: Any, d: str, customer_id: int) -> None:
    q = conn.execute_query_dict
    await _bare_rows(conn, d, [customer_id])
    c = (await q(_sql(d, "SELECT external_userid FROM bot_customer WHERE id = ?"), [customer_id]))[
        0
    ]
    await q(
        _sql(
            d,
            "SELECT m.*, a.userid, a.name FROM bot_message m LEFT JOIN bot_advisor a ON a.id = m.advisor_id WHERE m.customer_id = ? ORDER BY m.msgtime DESC, m.id DESC LIMIT 31",
        ),
        [customer_id],
    )
    msgs = await q(
        _sql(
            d,
            "SELECT id FROM bot_message WHERE customer_id = ? ORDER BY msgtime DESC, id DESC LIMIT 31",
        ),
        [customer_id],
    )
    mids = [m["id"] for m in msgs] or [0]
    await q(
        _sql(
            d, f"SELECT * FROM bot_review_case WHERE message_id IN ({', '.join('?' * len(mids))})"
        ),
        mids,
    )
    await q(
        _sql(
            d,
            "SELECT * FROM bot_alert WHERE external_userid = ? ORDER BY created_at DESC, id DESC LIMIT 20",
        ),
        [c["external_userid"]],
    )
    await q(
        _sql(d, "SELECT * FROM tagging_customer_tag WHERE customer_id = ? ORDER BY tag_id"),
        [customer_id],
    )
    await q(
        _sql(
            d,
            "SELECT * FROM tagging_customer_tag_history WHERE customer_id = ? ORDER BY at DESC, id DESC LIMIT 100",
        ),
        [customer_id],
    )
    await q(
        _sql(d, "SELECT * FROM core_audit_log WHERE target = ? ORDER BY id DESC LIMIT 10"),
        [f"customer:{customer_id}"],
    )
    # The other domains' panels: custom attribute fields with the customer's sealed
    # ones (tagging), and the SOP journeys the customer is enrolled in.
    await q("SELECT * FROM tagging_attribute_field ORDER BY id")
    await q(
        _sql(d, "SELECT customer_id, name FROM tagging_sealed_attribute WHERE customer_id IN (?)"),
        [customer_id],
    )
    await q(
        _sql(
            d,
            "SELECT * FROM sop_enrolment WHERE customer = ? ORDER BY entered_at DESC, id DESC LIMIT 20",
        ),
        [c["external_userid"]],
    )


async def _bare_search(conn: Any, d: str, text: str) -> None:
    q = conn.execute_query_dict
    like = "ILIKE" if d == "postgres" else "LIKE"
    where = (
        f"c.name {like} ? OR c.id IN (SELECT f.customer_id FROM bot_follow_relation f "
        f"WHERE f.remark {like} ?)"
    )
    args = [f"%{text}%", f"%{text}%"]
    await q(_sql(d, f"SELECT COUNT(*) AS n FROM bot_customer c WHERE {where}"), args)
    ids = await q(
        _sql(d, f"SELECT c.id FROM bot_customer c WHERE {where} ORDER BY c.id DESC LIMIT 50"), args
    )
    await _bare_rows(conn, d, [r["id"] for r in ids])


async def _bare_rows(conn: Any, d: str, ids: list[int]) -> None:
    """What a list row (and the page's profile) shows: the customer, their advisors with
    the relation, masked numbers, the last message."""
    q = conn.execute_query_dict
    cids = ids or [0]
    marks = ", ".join("?" * len(cids))
    await q(_sql(d, f"SELECT * FROM bot_customer WHERE id IN ({marks})"), cids)
    await q(
        _sql(
            d,
            f"SELECT f.customer_id, f.remark, f.description, f.status, f.added_at, f.state, a.userid, a.name FROM bot_follow_relation f JOIN bot_advisor a ON a.id = f.advisor_id WHERE f.customer_id IN ({marks})",
        ),
        cids,
    )
    await q(
        _sql(
            d,
            f"SELECT customer_id, phone_masked FROM bot_customer_phone WHERE customer_id IN ({marks})",
        ),
        cids,
    )
    await q(
        _sql(
            d,
            f"SELECT customer_id, MAX(msgtime) AS last FROM bot_message WHERE customer_id IN ({marks}) GROUP BY customer_id",
        ),
        cids,
    )


async def _bare_dashboard(conn: Any, d: str, top_advisors: list[str]) -> None:
    q = conn.execute_query_dict
    first = (NOW - timedelta(days=29)).date().isoformat()
    last = NOW.date().isoformat()
    await q(
        _sql(
            d,
            "SELECT day, metric, dim, n FROM admin_dash_daily WHERE metric IN (?, ?, ?, ?, ?) AND day >= ? AND day <= ?",
        ),
        ["messages", "customers", "violation_category", "violation_advisor", "intent", first, last],
    )
    ids = top_advisors or [""]
    await q(
        _sql(
            d,
            f"SELECT userid, name, department FROM bot_advisor WHERE userid IN ({', '.join('?' * len(ids))})",
        ),
        ids,
    )
    bounds = [NOW - timedelta(days=1), NOW - timedelta(days=3), NOW - timedelta(days=7)]
    await q(
        _sql(
            d, "SELECT COUNT(*) AS n FROM bot_review_case WHERE status = 'open' AND created_at > ?"
        ),
        [bounds[0]],
    )
    await q(
        _sql(
            d,
            "SELECT COUNT(*) AS n FROM bot_review_case WHERE status = 'open' AND created_at > ? AND created_at <= ?",
        ),
        [bounds[1], bounds[0]],
    )
    await q(
        _sql(
            d,
            "SELECT COUNT(*) AS n FROM bot_review_case WHERE status = 'open' AND created_at > ? AND created_at <= ?",
        ),
        [bounds[2], bounds[1]],
    )
    await q(
        _sql(
            d, "SELECT COUNT(*) AS n FROM bot_review_case WHERE status = 'open' AND created_at <= ?"
        ),
        [bounds[2]],
    )
    await q(
        "SELECT created_at FROM bot_review_case WHERE status = 'open' ORDER BY created_at LIMIT 1"
    )
    # Alerts per Beijing day and kind, counted by the database as the page asks for them.
    day = (
        "to_char(created_at AT TIME ZONE 'Asia/Shanghai', 'YYYY-MM-DD')"
        if d == "postgres"
        else "date(substr(created_at, 1, 19) || substr(created_at, -6), '+8 hours')"
    )
    await q(
        _sql(
            d,
            f"SELECT {day} AS day, kind, COUNT(*) AS n FROM bot_alert WHERE created_at >= ? GROUP BY 1, 2",
        ),
        [NOW - timedelta(days=30)],
    )
    # The SOP domain's funnel chart: the running campaigns (the bench seeds none).
    await q("SELECT id, name FROM sop_campaign WHERE status = 'active' ORDER BY id")


# ------------------------------------------------------------------ timing


async def _times(
    page: Callable[[int], Awaitable[Any]], sql: Callable[[int], Awaitable[Any]], runs: int
) -> tuple[list[float], list[float]]:
    """Each request's time, the page's and its bare SQL's, taken in turns on the same ids.

    A first pass over every id warms both (the caches, not the page, would be timed
    otherwise: the side timed first would read the rows from disk and the other from
    memory); then each id is timed page and SQL back to back, so a busy moment on the
    machine weighs on both alike.
    """
    for i in range(runs):
        await page(i)
        await sql(i)
    page_t, sql_t = [], []
    for i in range(runs):
        t0 = time.perf_counter()
        await page(i)
        t1 = time.perf_counter()
        await sql(i)
        t2 = time.perf_counter()
        page_t.append(t1 - t0)
        sql_t.append(t2 - t1)
    return page_t, sql_t


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


class _Analyzer:
    """The shipped model, off the event loop: the admin role's jobs (a reply library's
    re-check) use it now and then; no page timed here does."""

    async def analyze_many(self, items: Any, contexts: Any = None) -> list[Any]:
        from compliance_nlp import AnalyzerConfig, get_analyzer

        analyzer = get_analyzer(AnalyzerConfig())
        return list(await asyncio.to_thread(analyzer.analyze_many, items, contexts))


async def _run(url: str, data_dir: Path, args: argparse.Namespace, redis_url: str) -> None:
    import aiohttp
    from tortoise import Tortoise

    from admin import dashboard
    from admin import flows as admin_flows
    from core import db as core_db
    from core.appkit import KEYRING
    from core.audit import Actor
    from core.server import start_site
    from core.settings import Settings
    from siyu.app import create_app

    dialect = core_db.dialect_of(url)
    sec = BenchSecrets.generate()
    # A kept database is reused with the field key it was sealed under and the sizes it
    # was seeded with (the key is a throwaway one, written only into the bench folder).
    state_file = data_dir / f"seeded-{dialect}.json"
    state: dict[str, Any] | None = None
    if args.reuse and state_file.exists():
        state = json.loads(state_file.read_text())
        sizes = [state["messages"], state["customers"], state["requested_cases"]]
        if sizes != [args.messages, args.customers, args.cases]:
            raise SystemExit(f"{state_file} was seeded at other sizes: {sizes}")
        sec = BenchSecrets(**{**sec.__dict__, "field_key": state["field_key"]})
    settings = Settings(
        _env_file=None,
        data_dir=data_dir,
        database_url=url,
        redis_url=redis_url,
        crypto={"keys": {"bench": sec.field_key}, "active_key_id": "bench"},
        admin={"cookie_secure": False, "totp_required_roles": []},
        pipeline={"stream": f"siyu:bench-console:{uuid.uuid4().hex[:8]}"},
    )  # type: ignore[call-arg]
    app = create_app(settings, ("admin",), auto_migrate=True, analyzer=_Analyzer())
    runner, port = await start_site(app, "127.0.0.1", 0)
    base = f"http://127.0.0.1:{port}"
    try:
        conn = Tortoise.get_connection("default")
        if state is None:
            t0 = time.perf_counter()
            seeded = await _seed(conn, dialect, args, app[KEYRING])
            print(
                f"[{dialect}] seeded {args.customers:,} customers, {args.messages:,} messages, "
                f"{seeded['cases']:,} review cases in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )
            t0 = time.perf_counter()
            rebuilt = await dashboard.rebuild()
            print(
                f"[{dialect}] dashboard rollups rebuilt in {time.perf_counter() - t0:.0f} s ({rebuilt})",
                flush=True,
            )
            if args.keep:
                state_file.write_text(
                    json.dumps(
                        {
                            "messages": args.messages,
                            "customers": args.customers,
                            "requested_cases": args.cases,
                            "cases": seeded["cases"],
                            "field_key": sec.field_key,
                        }
                    )
                )
                state_file.chmod(0o600)
        else:
            seeded = {
                "customers": state["customers"],
                "case_ids": list(range(1, state["cases"] + 1)),
            }
            print(f"[{dialect}] reusing the database seeded earlier ({state_file})", flush=True)
            # One reviewer account, as in a fresh run: the case page lists the reviewers.
            await conn.execute_query(
                "DELETE FROM admin_operator WHERE name LIKE 'bench-reviewer-%'"
            )
        reviewer = f"bench-reviewer-{uuid.uuid4().hex[:8]}"
        await admin_flows.do_create_operator(
            actor=Actor("system", "bench", "bench"),
            source="bench",
            name=reviewer,
            role="compliance",
            password=PASSWORD,
        )
        rng = random.Random(3)
        case_ids = [rng.choice(seeded["case_ids"]) for _ in range(args.runs + 1)]
        customer_ids = [rng.randint(1, seeded["customers"]) for _ in range(args.runs + 1)]
        names = [rng.choice(SURNAMES) + rng.choice(GIVEN) for _ in range(args.runs + 1)]
        category = "guaranteed_return"
        adv_rows = await conn.execute_query_dict(
            "SELECT advisor_userid, COUNT(*) AS n FROM bot_review_case GROUP BY advisor_userid "
            "ORDER BY n DESC LIMIT 15"
        )
        busy = str(adv_rows[0]["advisor_userid"])
        top = [
            str(r["dim"])
            for r in await conn.execute_query_dict(
                "SELECT DISTINCT dim FROM admin_dash_daily WHERE metric = 'violation_advisor'"
            )
        ]
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
            async with http.get(f"{base}/login") as r:
                token = re.search(r'name="_csrf" value="([^"]+)"', await r.text())
            assert token is not None
            async with http.post(
                f"{base}/login",
                data={"_csrf": token.group(1), "name": reviewer, "password": PASSWORD},
                allow_redirects=False,
            ) as r:
                assert r.status == 303, r.status

            def page(path_of: Callable[[int], str]) -> Callable[[int], Awaitable[None]]:
                async def get(i: int) -> None:
                    async with http.get(base + path_of(i)) as r:
                        await r.read()
                        assert r.status == 200, (path_of(i), r.status)

                return get

            cases: list[
                tuple[str, Callable[[int], Awaitable[Any]], Callable[[int], Awaitable[Any]]]
            ] = [
                (
                    "review queue (pending)",
                    page(lambda i: "/review"),
                    lambda i: _bare_queue(conn, dialect),
                ),
                (
                    "review queue (filters)",
                    page(lambda i: f"/review?status=all&category={category}&advisor={busy}"),
                    lambda i: _bare_queue(conn, dialect, category=category, advisor=busy),
                ),
                (
                    "case page",
                    page(lambda i: f"/review/{case_ids[i]}"),
                    lambda i: _bare_case(conn, dialect, case_ids[i]),
                ),
                (
                    "customer page",
                    page(lambda i: f"/customers/{customer_ids[i]}"),
                    lambda i: _bare_customer(conn, dialect, customer_ids[i]),
                ),
                (
                    "customer search",
                    page(lambda i: f"/customers?q={names[i]}"),
                    lambda i: _bare_search(conn, dialect, names[i]),
                ),
                (
                    "dashboard",
                    page(lambda i: "/dashboard"),
                    lambda i: _bare_dashboard(conn, dialect, top),
                ),
            ]
            print(
                f"[{dialect}] {'page':<24} {'p10 ms':>8} {'p50 ms':>8} {'p95 ms':>8} "
                f"{'SQL p10':>8} {'SQL p50':>8} {'SQL p95':>8} {'ratio':>6} {'p10 ratio':>9}",
                flush=True,
            )
            for label, page_fn, sql_fn in cases:
                if args.only and args.only not in label:
                    continue
                page_t, sql_t = await _times(page_fn, sql_fn, args.runs)
                p50, s50 = statistics.median(page_t), statistics.median(sql_t)
                # The 10th percentile as well: on a loaded machine it is the figure least
                # moved by other work (the ratio of medians stays the target's).
                p10, s10 = _p(page_t, 0.10), _p(sql_t, 0.10)
                print(
                    f"[{dialect}] {label:<24} {p10 * 1000:>8.2f} {p50 * 1000:>8.2f} "
                    f"{_p(page_t, 0.95) * 1000:>8.2f} {s10 * 1000:>8.2f} {s50 * 1000:>8.2f} "
                    f"{_p(sql_t, 0.95) * 1000:>8.2f} {p50 / s50:>5.2f}x {p10 / s10:>8.2f}x",
                    flush=True,
                )
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--customers", type=int, default=100_000)
    parser.add_argument("--cases", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=30, help="timed requests per page")
    parser.add_argument(
        "--pg-server",
        default="",
        help="a PostgreSQL server (admin URL) to run on as well, in a throwaway database",
    )
    parser.add_argument("--redis-url", default="", help="a Redis to use (default: embedded)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "var" / "bench-console")
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the seeded databases (the SQLite file, and the PostgreSQL one named by --pg-db)",
    )
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="time against the databases a --keep run left (same sizes), seeding only what is missing",
    )
    parser.add_argument(
        "--pg-db", default="", help="the kept PostgreSQL database's name (with --keep/--reuse)"
    )
    parser.add_argument(
        "--only", default="", help="time only the pages whose label contains this text"
    )
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    args = parser.parse_args()
    data_dir: Path = args.data_dir
    if not args.reuse:
        shutil.rmtree(data_dir, ignore_errors=True)
    data_dir.mkdir(parents=True, exist_ok=True)
    embedded = None
    redis_url = args.redis_url
    if not redis_url:
        from core import redis as core_redis

        embedded = core_redis.start_embedded(data_dir / "redis")
        redis_url = embedded.url
    try:
        if not args.skip_sqlite:
            asyncio.run(_run(f"sqlite://{data_dir / 'console.sqlite3'}", data_dir, args, redis_url))
        if args.pg_server:
            kept = (args.keep or args.reuse) and args.pg_db
            name = args.pg_db if kept else f"siyu_bench_{uuid.uuid4().hex[:10]}"
            if not (args.reuse and (data_dir / "seeded-postgres.json").exists()):
                if kept:
                    asyncio.run(
                        pg_admin(args.pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    )
                asyncio.run(pg_admin(args.pg_server, f'CREATE DATABASE "{name}"'))
            try:
                url = f"{args.pg_server.rsplit('/', 1)[0]}/{name}"
                asyncio.run(_run(url, data_dir, args, redis_url))
            finally:
                if not kept:
                    asyncio.run(
                        pg_admin(args.pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                    )
    finally:
        if embedded is not None:
            embedded.shutdown()
        if not (args.keep or args.reuse):
            shutil.rmtree(data_dir, ignore_errors=True)


if __name__ == "__main__":
    main()

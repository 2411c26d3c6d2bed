"""The worker's stages, composed in one place.

A batch read from the stream goes through:

1. ``normalise``  — callback XML or archive JSON becomes one draft shape, so
   every later stage is source-agnostic.
2. ``skip_stored`` — a redelivered item whose row exists is acknowledged
   without re-running analysis (the unique key would stop it anyway; this
   just saves the model's time).
3. ``context``    — each text to analyse gets the messages before it in its
   conversation (「是的👌」 is a promise after 「本金能拿回来吧？」): the last
   ``CONTEXT_TURNS`` within ``CONTEXT_WINDOW``, read in one query per batch, plus
   the messages of the read before it that are not stored yet and the earlier
   items of the same read.
4. ``analyse``    — compliance_nlp runs on every text before anything is
   stored (PIPL: only masked text is kept in clear).  Batched per read; a batch
   that fails is retried text by text, so one bad text fails alone.
5. ``enrich``     — events that name a contact fetch it from WeCom *before* the
   transaction, so no DB lock is held across a network call.  Failure is
   tolerated: the customer is marked for the reconcile job.
6. ``store``      — the read's messages in one transaction (a few multi-row
   statements; if it fails, each message again in its own, so one bad message
   fails alone), an event in its own: rows, the ``on_message``/``on_event`` hooks
   of other domains (in the root's order), review cases, alerts, outbox rows
   (``bot.flows``).
7. ``after_commit`` — side effects that must follow a durable write: waking
   the archive puller on ``msgaudit_notify``, then the domains' ``after_commit``
   hooks.

Stages 1–3 read the database (``prepare``), 4 runs in the analyzer's processes
(``analyse``), 5–7 write (``store``).  The worker overlaps them across reads: while
read N is stored, read N+1 is already being analysed, so the analyzer's process and
the worker's are busy at once instead of in turn.  Reads are still stored one after
the other, in the order read, and read N+1's context holds read N's messages (from
memory: they are analysed but not committed when N+1 is prepared), so every line is
judged with the same conversation as if each read had been stored before the next
was read.  ``process_batch`` runs the three for one read.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Protocol

from bot import service as bot_service
from bot.archive import SENDER_KEY, record_to_draft
from bot.flows import (
    EventContext,
    MessageToStore,
    StoreDeps,
    do_store_event,
    do_store_messages,
)
from bot.schemas import (
    CALLBACK_FIELDS,
    Direction,
    EventDraft,
    MessageDraft,
    QueuedItem,
    Source,
    StoreResult,
)
from bot.wecom.parse import Inbound, inbound_from_fields, parse_inbound
from compliance_nlp import Analysis
from compliance_nlp.pool import AnalyzerUnavailable
from compliance_nlp.types import Role as AnalysisRole
from compliance_nlp.types import Turn
from core.metrics import Metrics

log = logging.getLogger(__name__)

Draft = MessageDraft | EventDraft
Context = tuple[Turn, ...]
ConversationKey = tuple[str, str] | str
# A conversation's turns as the analyser gets them: (when, role, text), oldest first.
History = dict[ConversationKey, list[tuple[Any, AnalysisRole, str]]]

# What the analyser reads before a line: the analyzer's own window (AnalyzerConfig's
# context_turns), and a day — an answer the next morning still answers the evening's
# question, last week's chat does not.
CONTEXT_TURNS = 8
CONTEXT_WINDOW = timedelta(hours=24)


class Analyzer(Protocol):
    """``compliance_nlp.pool.AnalyzerPool`` in production; order of results = of items."""

    async def analyze_many(
        self,
        items: Sequence[tuple[str, AnalysisRole]],
        contexts: Sequence[Context | None] | None = None,
    ) -> list[Analysis]: ...


class ContactFetcher(Protocol):
    async def get_external_contact(self, external_userid: str) -> dict[str, Any]: ...
    async def get_user(self, userid: str) -> dict[str, Any]: ...
    async def get_group_chat(self, chat_id: str) -> dict[str, Any]: ...


def _text_of_callback(inbound: Inbound) -> str:
    f = inbound.fields
    if inbound.msg_type == "text":
        return str(f.get("Content", ""))
    if inbound.msg_type == "link":
        return f"{f.get('Title', '')} {f.get('Description', '')}".strip()
    if inbound.msg_type == "location":
        return str(f.get("Label", ""))
    return ""


def normalise(item: QueuedItem) -> Draft:
    if item.source is Source.ARCHIVE:
        return record_to_draft(item.payload["record"], sender=item.payload.get(SENDER_KEY))
    fields = item.payload.get(CALLBACK_FIELDS)
    inbound = (
        inbound_from_fields(fields, item.payload["xml"])
        if isinstance(fields, dict)
        else parse_inbound(item.payload["xml"])
    )
    if inbound.kind == "message":
        return MessageDraft(
            msgid=str(inbound.msg_id or item.dedup_key),
            source=Source.CALLBACK,
            direction=Direction.MEMBER_TO_APP,
            sender_id=inbound.from_user,
            sender_role="member",
            receiver_ids=(inbound.to_user,),
            roomid=None,
            msgtime=inbound.create_time,
            msgtype=inbound.msg_type,
            action="send",
            text=_text_of_callback(inbound),
            content={
                k: v
                for k, v in inbound.fields.items()
                if k in ("MediaId", "PicUrl", "Format", "Url")
            },
            advisor_userid=inbound.from_user,
        )
    return EventDraft(
        event_key=inbound.dedup_key,
        kind=inbound.kind,
        event=inbound.event or "",
        change_type=inbound.change_type or "",
        occurred_at=inbound.create_time,
        fields=dict(inbound.fields),
        raw_xml=inbound.raw_xml,
    )


def original_of(item: QueuedItem) -> dict[str, Any]:
    """What a message stores, sealed, as its original: the payload as queued, but for a
    callback's parsed fields (the XML says it all)."""
    if CALLBACK_FIELDS in item.payload:
        return {k: v for k, v in item.payload.items() if k != CALLBACK_FIELDS}
    return dict(item.payload)


def original_json_of(item: QueuedItem) -> str | None:
    """``original_of(item)`` as the stream entry's text, where that is what it holds."""
    return None if CALLBACK_FIELDS in item.payload else item.payload_json


@dataclass
class Read:
    """One read on its way through the stages (``Pipeline.prepare`` → ``analyse`` → ``store``)."""

    items: Sequence[QueuedItem]
    drafts: list[Draft | BaseException]
    fresh: list[bool]
    # Positions of the fresh messages with text, in the order they are analysed.
    to_analyse: list[int]
    # The stored part of the conversations of those messages.
    history: History = field(default_factory=dict)
    analysing: asyncio.Future[list[Analysis | BaseException]] | None = None

    async def analyses(self) -> dict[int, Analysis | BaseException]:
        """Each analysed position's analysis, or its failure."""
        if self.analysing is None:
            return {}
        results = await self.analysing
        return dict(zip(self.to_analyse, results, strict=True))

    async def stored_turns(self) -> list[tuple[MessageDraft, str]]:
        """The messages this read is about to store, with their text as stored (masked):
        context for the read after it, which cannot find them in the database yet."""
        analyses = await self.analyses()
        out = []
        for i, analysis in analyses.items():
            d = self.drafts[i]
            if isinstance(d, MessageDraft) and isinstance(analysis, Analysis):
                if analysis.masked_text:
                    out.append((d, analysis.masked_text))
        return out

    def cancel(self) -> None:
        """Stop waiting for the analysis (the worker is stopping before storing this read)."""
        if self.analysing is not None and not self.analysing.done():
            self.analysing.cancel()


@dataclass
class Pipeline:
    analyzer: Analyzer
    deps: StoreDeps
    metrics: Metrics
    fetcher: ContactFetcher | None = None
    on_archive_notify: Callable[[], Awaitable[None]] | None = None

    async def process_batch(self, items: Sequence[QueuedItem]) -> list[StoreResult | BaseException]:
        """Run every stage for a batch; one failing item does not fail the others.

        Returns one entry per item, in order: an item that failed comes back as its
        exception, for the worker to retry or dead-letter.  Raises only when a query
        of the whole read fails (the duplicate pre-check, the conversation read).
        """
        read = await self.prepare(items)
        await self.analyse(read)
        return await self.store(read)

    async def prepare(self, items: Sequence[QueuedItem]) -> Read:
        """Normalise, pre-check duplicates and read the conversations stored so far.

        Only reads the database: the worker prepares the next read while the one
        before it is still being analysed.
        """
        drafts: list[Draft | BaseException] = []
        with self._timed("normalise"):
            for item in items:
                try:
                    drafts.append(normalise(item))
                except Exception as exc:  # noqa: BLE001 - reported per item
                    drafts.append(exc)

        with self._timed("skip_stored"):
            # Two queries per batch, not one per item.
            stored_msgs = await bot_service.stored_message_keys(
                keys=[(d.source.value, d.msgid) for d in drafts if isinstance(d, MessageDraft)]
            )
            stored_events = await bot_service.stored_event_keys(
                keys=[d.event_key for d in drafts if isinstance(d, EventDraft)]
            )
            fresh = [
                (d.source.value, d.msgid) not in stored_msgs
                if isinstance(d, MessageDraft)
                else d.event_key not in stored_events
                if isinstance(d, EventDraft)
                else False
                for d in drafts
            ]

        to_analyse = [
            i for i, d in enumerate(drafts) if fresh[i] and isinstance(d, MessageDraft) and d.text
        ]
        history: History = {}
        if to_analyse:
            with self._timed("context"):
                history = await stored_conversations(
                    [d for i in to_analyse if isinstance(d := drafts[i], MessageDraft)]
                )
        return Read(items=items, drafts=drafts, fresh=fresh, to_analyse=to_analyse, history=history)

    async def analyse(self, read: Read, *, after: Read | None = None) -> None:
        """Start analysing ``read``'s texts; ``store`` waits for them.

        ``after``: the read before it, prepared earlier and not stored yet — its
        messages are part of the conversation ``read`` continues.  Its analyses are
        awaited first, so its lines enter the context as they will be stored (masked).
        """
        if read.analysing is not None or not read.to_analyse:
            return
        earlier: list[tuple[MessageDraft, str]] = []
        if after is not None:
            earlier = await after.stored_turns()
        drafts = [d for i in read.to_analyse if isinstance(d := read.drafts[i], MessageDraft)]
        batch: list[tuple[str, AnalysisRole]] = [(d.text, d.analysis_role) for d in drafts]
        contexts = conversation_contexts_from(drafts, read.history, earlier)
        read.analysing = asyncio.ensure_future(self._timed_analysis(batch, contexts))

    async def _timed_analysis(
        self, batch: list[tuple[str, AnalysisRole]], contexts: list[Context | None]
    ) -> list[Analysis | BaseException]:
        with self._timed("analyse"):
            return await self._analyse(batch, contexts)

    async def store(self, read: Read) -> list[StoreResult | BaseException]:
        """Store what ``read`` holds, in the order read; one result per item."""
        await self.analyse(read)  # not started by the caller: start it now
        analyses = await read.analyses()
        items, drafts, fresh = read.items, read.drafts, read.fresh
        # Messages are stored a run at a time (one transaction, a few multi-row
        # statements); an event ends a run, so rows are stored in the order read.
        out: list[StoreResult | BaseException | None] = [None] * len(items)
        run: list[int] = []
        for i, d in enumerate(drafts):
            if isinstance(d, BaseException):
                out[i] = d
            elif not fresh[i]:
                out[i] = StoreResult(stored=False)
                self.metrics.processed.labels("duplicate").inc()
            elif isinstance(d, MessageDraft):
                analysis = analyses.get(i)
                if isinstance(analysis, BaseException):
                    out[i] = analysis
                else:
                    run.append(i)
            else:
                await self._store_messages(items, drafts, analyses, run, out)
                run = []
                try:
                    out[i] = await self._store_event(d)
                except Exception as exc:  # noqa: BLE001 - reported per item: one bad item must not fail its batch
                    out[i] = exc
                else:
                    await self._stored(out[i])
        await self._store_messages(items, drafts, analyses, run, out)
        done = [r for r in out if r is not None]
        assert len(done) == len(items), "every item has its result"
        return done

    async def _store_messages(
        self,
        items: Sequence[QueuedItem],
        drafts: Sequence[Draft | BaseException],
        analyses: dict[int, Analysis | BaseException],
        run: list[int],
        out: list[StoreResult | BaseException | None],
    ) -> None:
        """Store the messages at positions ``run`` together; each result into ``out``."""
        if not run:
            return
        batch = []
        for i in run:
            d, analysis = drafts[i], analyses.get(i)
            assert isinstance(d, MessageDraft) and not isinstance(analysis, BaseException)
            batch.append(
                MessageToStore(
                    draft=d,
                    analysis=analysis,
                    original=original_of(items[i]),
                    original_json=original_json_of(items[i]),
                )
            )
        with self._timed("store"):
            results = await do_store_messages(items=batch, deps=self.deps)
        for i, result in zip(run, results, strict=True):
            out[i] = result
            await self._stored(result)

    async def _stored(self, result: StoreResult | BaseException | None) -> None:
        """Count what was stored, then run the after-commit hooks (the row is durable)."""
        if not isinstance(result, StoreResult):
            return
        self.metrics.processed.labels("stored" if result.stored else "duplicate").inc()
        self._count_compliance(result)
        if result.stored and result.record is not None:
            await self.deps.hooks.run_after_commit(result.record)

    async def _analyse(
        self, batch: list[tuple[str, AnalysisRole]], contexts: list[Context | None]
    ) -> list[Analysis | BaseException]:
        """Analyse a read's texts together; if that fails, each alone.

        ``analyze_many`` fails as a whole when any one text is refused (too long) or
        kills its worker process: retried one by one, only that text carries the
        error, and the others are stored.  A pool that cannot run at all
        (``AnalyzerUnavailable``) fails every item alike: no point trying each.
        """
        try:
            return list(await self.analyzer.analyze_many(batch, contexts))
        except AnalyzerUnavailable as exc:
            return [exc] * len(batch)
        except Exception as exc:  # noqa: BLE001 - narrowed below, item by item
            if len(batch) == 1:
                return [exc]
            log.warning(
                "batch analysis failed; analysing its items one by one",
                extra={"items": len(batch), "error": type(exc).__name__},
            )
        out: list[Analysis | BaseException] = []
        for pos, one in enumerate(batch):
            try:
                out.append((await self.analyzer.analyze_many([one], [contexts[pos]]))[0])
            except AnalyzerUnavailable as exc:
                out += [exc] * (len(batch) - pos)
                break
            except Exception as exc:  # noqa: BLE001 - this item's own failure
                out.append(exc)
        return out

    def _count_compliance(self, result: StoreResult) -> None:
        for category, severity in result.findings:
            self.metrics.findings.labels(category, severity).inc()
        if result.review_case:
            self.metrics.review_cases.inc()
        for key in result.alerts:
            # Alert keys start with their kind (violation:…, churn:…, complaint:…).
            self.metrics.alerts.labels(key.split(":", 1)[0]).inc()

    async def _store_event(self, draft: EventDraft) -> StoreResult:
        with self._timed("enrich"):
            ctx = await self._enrich(draft)
        with self._timed("store"):
            result = await do_store_event(draft=draft, ctx=ctx, deps=self.deps)
        if result.stored and draft.event == "msgaudit_notify" and self.on_archive_notify:
            await self.on_archive_notify()
        return result

    async def _enrich(self, draft: EventDraft) -> EventContext:
        if self.fetcher is None:
            return EventContext()
        f = draft.fields
        contact = member = chat = None
        try:
            if draft.event == "change_external_contact" and draft.change_type in (
                "add_external_contact",
                "add_half_external_contact",
                "edit_external_contact",
            ):
                if f.get("ExternalUserID"):
                    contact = await self.fetcher.get_external_contact(str(f["ExternalUserID"]))
                if f.get("UserID"):
                    member = await self.fetcher.get_user(str(f["UserID"]))
            elif draft.event == "change_external_contact" and f.get("UserID"):
                member = await self.fetcher.get_user(str(f["UserID"]))
            elif draft.event == "change_external_chat" and draft.change_type != "dismiss":
                if f.get("ChatId"):
                    chat = await self.fetcher.get_group_chat(str(f["ChatId"]))
        except Exception as exc:  # noqa: BLE001 - WeCom down must not stop intake
            log.warning(
                "enrich failed; customer marked for reconcile",
                extra={"event_key": draft.event_key, "error": type(exc).__name__},
            )
        return EventContext(contact=contact, member=member, group_chat=chat)

    def _timed(self, stage: str) -> _Timer:
        return _Timer(self.metrics, stage)


def conversation_key(draft: MessageDraft) -> ConversationKey | None:
    """A group chat's roomid, or the (advisor, customer) pair of a one-to-one chat."""
    if draft.roomid:
        return draft.roomid
    if draft.advisor_userid and draft.external_userid:
        return (draft.advisor_userid, draft.external_userid)
    return None


async def conversation_contexts(drafts: Sequence[MessageDraft]) -> list[Context | None]:
    """For each draft, the turns before it in its conversation (oldest first).

    Stored messages come from one query for the whole batch; earlier items of the same
    batch (an archive read carries the question and its answer together) are added in
    memory. Only advisor lines are judged in context; customers get None.
    """
    return conversation_contexts_from(drafts, await stored_conversations(drafts), ())


def _judged_in_context(draft: MessageDraft) -> ConversationKey | None:
    return conversation_key(draft) if draft.analysis_role == "advisor" else None


async def stored_conversations(drafts: Sequence[MessageDraft]) -> History:
    """The stored turns of the conversations ``drafts`` continue, in one query."""
    wanted = [(k, d) for d in drafts if (k := _judged_in_context(d)) is not None]
    if not wanted:
        return {}
    since = min(d.msgtime for _, d in wanted) - CONTEXT_WINDOW
    until = max(d.msgtime for _, d in wanted)
    stored = await bot_service.conversation_turns(
        rooms={k for k, _ in wanted if isinstance(k, str)},
        pairs={k for k, _ in wanted if isinstance(k, tuple)},
        since=since,
        until=until,
    )
    history: History = {}
    for t in stored:
        key: ConversationKey | None = t.roomid or (
            (t.advisor_userid, t.external_userid)
            if t.advisor_userid and t.external_userid
            else None
        )
        if key is not None:
            role: AnalysisRole = "customer" if t.sender_role == "customer" else "advisor"
            history.setdefault(key, []).append((t.msgtime, role, t.masked_text))
    return history


def conversation_contexts_from(
    drafts: Sequence[MessageDraft],
    history: History,
    pending: Sequence[tuple[MessageDraft, str]],
) -> list[Context | None]:
    """Each draft's context from the stored ``history``, then ``pending`` (messages of the
    read before, analysed and about to be stored: (draft, masked text)), then the earlier
    drafts of the same read."""
    keys = [_judged_in_context(d) for d in drafts]
    if not any(k is not None for k in keys):
        return [None] * len(drafts)
    not_stored: History = {}
    for d, masked in pending:
        if (key := conversation_key(d)) is not None:
            not_stored.setdefault(key, []).append((d.msgtime, d.analysis_role, masked))
    # The read's drafts by conversation, in the order read: each line looks only at its
    # own conversation's, not at every draft before it (a read of 128 lines).
    in_read: dict[ConversationKey, list[tuple[int, MessageDraft]]] = {}
    for pos, d in enumerate(drafts):
        if d.text and (k := conversation_key(d)) is not None:
            in_read.setdefault(k, []).append((pos, d))
    out: list[Context | None] = []
    for pos, (key, draft) in enumerate(zip(keys, drafts, strict=True)):
        if key is None:
            out.append(None)
            continue
        earlier = [
            (d.msgtime, d.analysis_role, d.text)
            for p, d in in_read.get(key, ())
            if p < pos and d.msgtime <= draft.msgtime
        ]
        lo = draft.msgtime - CONTEXT_WINDOW
        turns = [
            (when, role, text)
            for when, role, text in [*history.get(key, []), *not_stored.get(key, []), *earlier]
            if lo <= when <= draft.msgtime
        ]
        turns.sort(key=lambda t: t[0])  # stable: stored, then pending, then this read's at a tie
        out.append(tuple(Turn(role, text) for _, role, text in turns[-CONTEXT_TURNS:]) or None)
    return out


class _Timer:
    def __init__(self, metrics: Metrics, stage: str) -> None:
        self.metrics = metrics
        self.stage = stage
        self.t0 = 0.0

    def __enter__(self) -> None:
        self.t0 = time.perf_counter()

    def __exit__(self, *exc: object) -> None:
        self.metrics.stage_seconds.labels(self.stage).observe(time.perf_counter() - self.t0)

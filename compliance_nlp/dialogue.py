"""Question and answer: a reply read as the answer to the customer turn before it.

「是的👌」 alone is nothing; after 「到期本金能拿回来吧？」 it promises the principal, after
「验证码发您了」 a 「收到，我这边帮您点了」 takes over the customer's account, and after
「你帮我把测评做了吧」 a 「交给我」 does the customer's risk test. The frames are data
(``rules/dialogue.json``): what the customer asks about names the category, the reply
goes along with it (an assurance, compliant handling, or the frame's own words) or it
refuses, corrects or states an accurate fact, which stays clean. A finding points at
the advisor's line and names the customer turn that gave it its meaning
(``Finding.context_index`` / ``context_evidence``).

A rules directory without its own ``dialogue.json`` uses the shipped one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from pathlib import Path

from compliance_nlp.model import answered_turn
from compliance_nlp.normalize import Normalized, normalize
from compliance_nlp.pair import Stance
from compliance_nlp.rules import RULES_DIR, RuleDataError, RuleSet, load_json
from compliance_nlp.types import Finding, Turn

__all__ = ["DialogueRules", "Reading", "asked_turns", "followed_turns", "settled_turns"]

DIALOGUE_FILE = "dialogue.json"
_GENERIC_KINDS = ("assure", "comply")
_CONTEXT_EVIDENCE_CHARS = 60
# 「啥规定」, 「什么心意」: what? asked of a word the advisor just used (``follows``).
_ECHO = re.compile(r"^(那|就|是)?(啥|什么|哪个|哪种|哪门子|怎么个|咋个)")


def _compile(patterns: object, where: str) -> tuple[re.Pattern[str], ...]:
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise RuleDataError(f"{DIALOGUE_FILE}: {where} must be a list of patterns")
    try:
        return tuple(re.compile(p) for p in patterns)
    except re.error as exc:
        raise RuleDataError(f"{DIALOGUE_FILE}: {where}: bad pattern: {exc}") from exc


@dataclass(frozen=True, slots=True)
class _Fact:
    id: str
    categories: tuple[str, ...]
    ask: tuple[re.Pattern[str], ...]
    reply: tuple[re.Pattern[str], ...]


@dataclass(frozen=True, slots=True)
class _Frame:
    id: str
    category: str
    ask: tuple[re.Pattern[str], ...]
    affirm: tuple[re.Pattern[str], ...]
    strong: tuple[re.Pattern[str], ...]
    refuse: tuple[re.Pattern[str], ...]
    exempt: tuple[re.Pattern[str], ...]
    exempt_reply: tuple[re.Pattern[str], ...]
    generic: tuple[str, ...]
    warn: tuple[re.Pattern[str], ...] = ()


# A bare yes said by repeating the question's verb with 的 (「本金一定在吧」 → 「在的在的」,
# 「能赔吧」 → 「赔的」): read as an assurance when the verb is in the question. A reply
# that goes on (「在的，本金自动转存了一年」) says what it means itself.
_ECHO_YES = re.compile(
    r"([\u4e00-\u9fff]{1,2})的(?:\1的)?(?:啊|呀|哈|哦|呢|啦|喔|噢)*[，,。!！~～]*$"
)
_ECHO_PLAIN = frozenset(("好", "行", "对", "是", "嗯", "来", "说", "知道", "明白", "收到", "懂"))


def _echo_yes(text: str, question: str) -> re.Match[str] | None:
    m = _ECHO_YES.match(text)
    if m is None or m.group(1)[0] in "不没别未无非" or m.group(1) in _ECHO_PLAIN:
        return None
    return m if m.group(1) in question else None


def _cjk(text: str) -> int:
    return sum(1 for c in text if "\u4e00" <= c <= "\u9fff")


def _first(patterns: tuple[re.Pattern[str], ...], text: str) -> re.Match[str] | None:
    for p in patterns:
        m = p.search(text)
        if m is not None:
            return m
    return None


class DialogueRules:
    """Compiled ``dialogue.json``; ``find`` is pure and thread-safe."""

    def __init__(self, ruleset: RuleSet, directory: str = "") -> None:
        from compliance_nlp.rules import CATEGORIES

        where = Path(directory) if directory else None
        if where is not None and not (where / DIALOGUE_FILE).is_file():
            where = RULES_DIR
        data = load_json(DIALOGUE_FILE, where)
        self.version = str(data["version"])
        # A turn typed in pinyin (「zhe ge bao ben ma」 → 「bao de」) is read in characters
        # (``romanised`` in stance.json, the pair model's reading too).
        self._romanise = lru_cache(maxsize=4096)(Stance.load(directory).romanise)
        self._ruleset = ruleset
        self._max_chars = int(data.get("max_reply_chars", 48))
        generic = data.get("generic") or {}
        self._generic = {k: _compile(generic.get(k, []), f"generic.{k}") for k in _GENERIC_KINDS}
        self._affirm_raw = _compile(data.get("affirm_raw", []), "affirm_raw")
        self._refuse = _compile(data.get("refuse", []), "refuse")
        self._refuse_lead = _compile(data.get("refuse_lead", []), "refuse_lead")
        # The proper channel named (本人, 柜台办, 对公账户) corrects a request to hand money,
        # an account or a test to the advisor; after 「这个保险是存款吧？」 a 「对的，在我们
        # 柜台办的，放心」 corrects nothing.
        channel = data.get("refuse_channel") or {}
        self._channel = _compile(channel.get("patterns", []), "refuse_channel.patterns")
        self._channel_categories = frozenset(str(c) for c in channel.get("categories", []))
        if not self._channel_categories <= set(CATEGORIES):
            raise RuleDataError(
                f"{DIALOGUE_FILE}: refuse_channel.categories must name the taxonomy"
            )
        facts = []
        for i, raw in enumerate(data.get("facts", [])):
            fid = str(raw.get("id") or f"fact {i}")
            categories = tuple(str(c) for c in raw.get("categories", []))
            if not categories or any(c not in CATEGORIES for c in categories):
                raise RuleDataError(f"{DIALOGUE_FILE}: {fid}: categories must name the taxonomy")
            facts.append(
                _Fact(
                    id=fid,
                    categories=categories,
                    ask=_compile(raw.get("ask"), f"{fid}.ask"),
                    reply=_compile(raw.get("reply"), f"{fid}.reply"),
                )
            )
        self._facts = tuple(facts)
        frames = []
        seen: set[str] = set()
        for i, raw in enumerate(data.get("frames", [])):
            fid = str(raw.get("id") or f"frame {i}")
            category = str(raw.get("category"))
            if category not in CATEGORIES:
                raise RuleDataError(f"{DIALOGUE_FILE}: {fid}: unknown category {category!r}")
            if fid in seen:
                raise RuleDataError(f"{DIALOGUE_FILE}: duplicate frame id {fid}")
            seen.add(fid)
            kinds = tuple(str(k) for k in raw.get("generic", []))
            if any(k not in _GENERIC_KINDS for k in kinds):
                raise RuleDataError(f"{DIALOGUE_FILE}: {fid}: generic must name {_GENERIC_KINDS}")
            frame = _Frame(
                id=fid,
                category=category,
                ask=_compile(raw.get("ask"), f"{fid}.ask"),
                affirm=_compile(raw.get("affirm", []), f"{fid}.affirm"),
                strong=_compile(raw.get("strong", []), f"{fid}.strong"),
                refuse=_compile(raw.get("refuse", []), f"{fid}.refuse"),
                exempt=_compile(raw.get("exempt", []), f"{fid}.exempt"),
                exempt_reply=_compile(raw.get("exempt_reply", []), f"{fid}.exempt_reply"),
                generic=kinds,
                warn=_compile(raw.get("warn", []), f"{fid}.warn"),
            )
            if not frame.ask:
                raise RuleDataError(f"{DIALOGUE_FILE}: {fid}: 'ask' is empty")
            frames.append(frame)
        self._frames = tuple(frames)
        # Frames whose 'ask' names a topic (another firm, moving money) rather than a
        # question about a forbidden thing: they name no category for ``categories``.
        self._topics = frozenset(str(t) for t in data.get("topic_frames", []))
        # Which frames and facts a customer turn asks about, by its normalised text: in a
        # conversation several advisor lines answer the same turn, so it is read once.
        self._asks = lru_cache(maxsize=4096)(self._read_question)
        # A short customer turn asking the particulars of what the advisor just went
        # along with (「多少」, 「怎么付」, 「啥心意」): the question before it stays open.
        follow = data.get("follow_up") or {}
        self._follow = _compile(follow.get("patterns", []), "follow_up.patterns")
        self._doubt = _compile(follow.get("doubt", []), "follow_up.doubt")
        self._follow_chars = int(follow.get("max_chars", 12))

    def _read_question(self, text: str) -> tuple[frozenset[int], frozenset[int]]:
        text = self._romanise(text)
        frames = frozenset(i for i, f in enumerate(self._frames) if _first(f.ask, text))
        facts = frozenset(i for i, f in enumerate(self._facts) if _first(f.ask, text))
        return frames, facts

    def follows(self, customer_text: str, said: str = "") -> bool:
        """Whether a customer turn only asks the particulars of what the advisor's last
        answer (``said``) went along with (「多少」, 「怎么付」, 「那起投多少」, or 「啥规定」
        after 「规定要一起买」: what? of a word the advisor used): short, naming nothing a
        frame asks about. The advisor's reply to it (「见面说」, 「晚上我私聊你」, 「您准备好
        钱，明天我找您」) still answers the question before."""
        text = self._romanise(normalize(customer_text).text)
        if not text or len(text) > self._follow_chars:
            return False
        frames, _ = self._asks(text)
        if frames:
            return False
        if _first(self._follow, text) is not None or _first(self._doubt, text) is not None:
            return True
        echo = _ECHO.match(text)
        if echo is None or not said:
            return False
        said = normalize(said).text
        word = text[echo.end() : echo.end() + 4]
        return any(word[:k] in said for k in (4, 3, 2) if len(word) >= k)

    def categories(self, customer_text: str) -> frozenset[str]:
        """The categories a customer turn asks about (its frames' categories), read on
        its normalised text: 「保本吗」 names guaranteed_return, 「和存款一样吗」
        misleading_promotion, 「内部消息」 insider_tip."""
        frames, _ = self._asks(customer_text)
        return frozenset(
            self._frames[k].category for k in frames if self._frames[k].id not in self._topics
        )

    def closes(self, advisor_text: str) -> bool:
        """Whether an advisor turn settles what was asked before it: refuses or corrects
        it, or answers it outright (「是的👌」, 「放心」) — a reply after the customer's
        next turn answers that turn, not the question already answered. An answer that
        takes the matter on (「可以的，我来想想办法」: the advisor doing something, the
        second ``generic.comply`` pattern) leaves it open: the advisor's next lines still
        carry it out."""
        text = self._romanise(normalize(advisor_text).text)
        if self._refuses(text):
            return True
        if len(text) > self._max_chars:
            return False
        if _first(self._generic["assure"], text) is not None:
            # 「是的👌」 answers; 「可以的，我来想想办法」 takes the matter on.
            return _first(self._generic["comply"][1:], text) is None
        raw = advisor_text.strip().lower()
        return not text.strip() and _first(self._affirm_raw, raw) is not None

    def refuses(self, advisor_text: str) -> bool:
        """Whether an advisor turn refuses or corrects (「双录必须您本人回答」,
        「这个真不行，返佣是违规的」): the question before it is settled, and the
        advisor's next lines before the customer speaks again explain or offer what is
        allowed (「哪里没听懂您直接问，我再给您讲一遍」), they do not go along with it."""
        return self._refuses(self._romanise(normalize(advisor_text).text))

    def _refuses(self, text: str) -> bool:
        return any(
            _first(p, text) is not None for p in (self._refuse_lead, self._refuse, self._channel)
        )

    def find(
        self,
        reply: Normalized,
        reply_raw: str,
        asked: Sequence[tuple[int, str, str]],
        *,
        settled: frozenset[int] = frozenset(),
        followed: frozenset[int] = frozenset(),
    ) -> Reading:
        """How the advisor ``reply`` reads as the answer to the customer turns ``asked``.

        ``reply`` is the normalised line, ``reply_raw`` the line before emoji were
        removed (lower case); ``asked`` holds (index in the context, normalised text,
        masked text) of the customer turns the reply may answer, latest first
        (``asked_turns``). A frame's finding names the turn its question is in.
        ``settled`` holds the indices of those turns an advisor turn after them already
        refused (``settled_turns``): what they asked makes no finding, and the model's
        reading of their category is no evidence either. ``followed`` holds those the
        advisor already answered, reached again by a follow-up (``followed_turns``): a
        reply carries them on only in the frame's own words (「见面说」 after 「多少」 after
        a rebate agreed), not by a generic 「可以的」 (「那怎么买」 → 「可以的，APP上就能买」
        answers how to buy).
        """
        if followed and asked and _first(self._doubt, self._romanise(asked[0][1])):
            # The customer doubts the answer (「你这么肯定？」): a plain yes repeats it.
            followed = frozenset()
        text = self._romanise(reply.text)
        # Read in characters from pinyin: a finding spans the whole line.
        romanised = text != reply.text
        # The line model reads characters, not pinyin: what it makes of a line mostly in
        # pinyin (「hao de」) is no evidence (the frames and the pair model read it in
        # characters); a laugh in a line of characters (「可以试试hhh」) changes nothing.
        reading = Reading(romanised=romanised and 2 * _cjk(reply.text) < _cjk(text))
        if not asked:
            return reading
        # A long reply is left to the line rules and the model, but what it refuses or
        # corrects still clears the question's category.
        long = len(text) > self._max_chars
        questions = [self._asks(norm) for _, norm, _ in asked]
        if not any(frames or facts for frames, facts in questions):
            return reading
        asked_facts = frozenset().union(*(facts for _, facts in questions))
        for k, fact in enumerate(self._facts):
            if k in asked_facts and _first(fact.reply, text):
                for category in fact.categories:
                    reading.cleared[category] = "fact"
        lead_refusal = _first(self._refuse_lead, text) is not None
        shared_refusal = lead_refusal or _first(self._refuse, text) is not None
        channel: bool | None = None  # read when a channel question was asked
        exempted: set[str] = set()
        for k, frame in enumerate(self._frames):
            if reading.cleared.get(frame.category) == "fact" or frame.category in exempted:
                continue
            if any(f.category == frame.category for f in reading.findings):
                continue
            pairs = zip(asked, questions, strict=True)
            turn = next((t for t, (frames, _) in pairs if k in frames), None)
            if turn is None:
                continue
            reading.asked.add(frame.category)
            index, answered, masked = turn
            answered = self._romanise(answered)
            if _first(frame.exempt_reply, text):
                reading.cleared[frame.category] = "fact"
                continue
            if _first(frame.exempt, answered):
                # The question itself is lawful (a time deposit's principal, a lower
                # commission, a red packet for the grandchildren, 「不保本吧」): it makes
                # nothing of the reply, but what the reply says in its own words is still
                # the line rules' to judge (「保本的，放心」, 「人家返多少我们加倍」).
                exempted.add(frame.category)
                reading.cleared.setdefault(frame.category, "model")
                continue
            if index in settled:
                reading.cleared.setdefault(frame.category, "model")
                continue
            strong = None if long else _first(frame.strong, text)
            refused = shared_refusal
            # A warning that goes along with what was asked (after 「那家券商怎么样」 a
            # 「…出了事连人都找不到，千万别碰」 runs the other firm down) refuses nothing
            # when the rest of the reply says what the frame affirms: that rest is read.
            said = text
            lead_here = lead_refusal
            if frame.warn and _first(frame.warn, text):
                rest = text
                for p in frame.warn:
                    rest = p.sub("，", rest)
                if _first(frame.strong, rest) or _first(frame.affirm, rest):
                    said = rest
                    lead_here = _first(self._refuse_lead, said) is not None
                    refused = lead_here or _first(self._refuse, said) is not None
            if not refused and frame.category in self._channel_categories:
                if channel is None:
                    channel = _first(self._channel, text) is not None
                refused = channel
            if strong is None and (refused or _first(frame.refuse, said)):
                # Asked, and refused or corrected: what the model reads into the line
                # is no evidence here; a line rule's finding is not either when the
                # reply opens with the refusal (「不行的，私下签的东西对您没保障」) or
                # says one no promise survives (「千万别告诉我」, 「保证不了」).
                reading.cleared.setdefault(frame.category, "all" if lead_here else "model")
                if lead_here:
                    # An outright refusal of what was asked: the model's guess at any
                    # other category is no evidence either (「没有稳赚的投资哈」).
                    reading.refused = True
                elif (
                    not long
                    and frame.category in self._channel_categories
                    and _first(self._channel, said) is not None
                    and _first(frame.affirm, said) is None
                    and not any(_first(self._generic[k], text) for k in _GENERIC_KINDS)
                ):
                    # Sent to the proper channel and nothing taken on (after 「那我把卡号
                    # 给你」, 「您在理赔单上自己填就行」): as outright a refusal.
                    reading.refused = True
                continue
            if long:
                continue
            match = strong or _first(frame.affirm, said)
            if match is None and index in followed:
                continue
            for kind in frame.generic:
                if match is None:
                    match = _first(self._generic[kind], text)
            if match is None and "assure" in frame.generic:
                match = _echo_yes(text, answered)
            # The normalised line loses the space or ～ that set an answer apart
            # (「嗯嗯 刘总您记得没错」, 「是滴～就这么简单」): the line as written is read too.
            glued = match is None and any(
                _first(self._generic[kind], reply_raw) for kind in frame.generic
            )
            # An emoji-only answer (👌) says yes to a question; a frame that names a topic
            # (another firm, moving money) asks none, so 👌 after 「下次发行叫我」 runs
            # nobody down.
            bare = frame.id not in self._topics and not text.strip()
            if match is None and bare and _first(self._affirm_raw, reply_raw.strip()):
                start, end = 0, len(reply.original)  # an emoji-only answer: 👌
            elif glued or (romanised and match is not None):
                start, end = 0, len(reply.original)
            elif match is None:
                continue
            else:
                start, end = reply.to_original(match.start(), match.end())
                if end <= start:
                    start, end = 0, len(reply.original)
            reading.findings.append(
                Finding(
                    category=frame.category,
                    severity="violation",
                    start=start,
                    end=end,
                    evidence=reply.original[start:end],
                    rule_id=frame.id,
                    source="rule",
                    basis=self._ruleset.category_basis(frame.category),
                    context_index=index,
                    context_evidence=masked[:_CONTEXT_EVIDENCE_CHARS],
                )
            )
        return reading


@dataclass
class Reading:
    """What the frames made of one reply: findings, and categories the answer cleared.

    ``cleared[category]``: ``"fact"`` — an accurate statement after the question (a time
    deposit's principal, a structured deposit's floor): findings of the category are
    dropped; ``"all"`` — a reply that opens with a refusal: the line rules' findings of
    the category become review and the model's are dropped; ``"model"`` — refused or
    corrected further on: the model's findings of the category are dropped (the line
    rules read negation themselves). ``refused``: the reply refuses outright what a
    frame's question asked; the model's findings of every category are dropped.
    ``romanised``: the reply was written in pinyin and read in characters here; the line
    model's findings of it are dropped.
    ``asked``: the categories whose questions were recognised; a model finding the
    conversation made (``context_index``) needs one. The
    model reads the line with the question but
    scores 「会的」 after 「会不会亏」 like 「不会的」: a frame that understood the answer
    knows better.
    """

    findings: list[Finding] = field(default_factory=list)
    cleared: dict[str, str] = field(default_factory=dict)
    refused: bool = False
    asked: set[str] = field(default_factory=set)
    romanised: bool = False

    def apply(self, found: list[Finding], *, model: bool) -> list[Finding]:
        """``found`` (the model's findings when ``model``, else the line rules') read
        with this answer; the frames' own findings join the line rules'."""
        out: list[Finding] = []
        mine = {f.category for f in self.findings}
        for f in found:
            how = self.cleared.get(f.category)
            if how == "fact" or (model and (how or self.refused or self.romanised)):
                continue
            if model and f.context_index is not None and not self.asked:
                # The model says the question made the line a violation, but no frame
                # recognises a question about anything a rule forbids
                # (「周一网点人是不是特别多😂」 → 「这个您懂的😂」).
                continue
            if how == "all":
                f = replace(f, severity="review")
            if not model and f.category in mine and f.severity == "review":
                continue  # the frame's violation says it, with the question named
            out.append(f)
        if model:
            return out
        violated = {f.category for f in out if f.severity == "violation"}
        out += [f for f in self.findings if f.category not in violated]
        return sorted(out, key=lambda f: (f.start, f.end))


def asked_turns(
    context: Sequence[Turn],
    answered: tuple[int, str],
    *,
    window: int,
    mask_style: str = "default",
    earlier: int = 2,
    closes: Callable[[str], bool] | None = None,
    follows: Callable[[str, str], bool] | None = None,
    refuses: Callable[[str], bool] | None = None,
) -> list[tuple[int, str]]:
    """The customer turns a reply may answer, latest first: the answered turn
    (``model.answered_turn``), then up to ``earlier`` customer turns before it within
    the window. A question stays open over a 「好」 or 「那证明啥时候能弄好」: the
    advisor's 「这周内吧，弄好了发您」 still answers 「我就200来万，咋办」. It is closed
    by an advisor turn after it that ``closes`` (a refusal: 「这个真不行，得您本人操作」, or
    an outright answer: 「是的👌」), so the 「好，明晚八点」 that follows answers the
    later request only — unless that later turn only asks the particulars of what the
    answer went along with (``follows``: 「多少」 after 「有的，签完我单独转您」) and no
    advisor turn between ``refuses``: 「见面说」 still answers the request for a rebate.
    When the answered turn is such a follow-up of the advisor's own offer (「啥心意」 after
    「这周成交另有心意」), that advisor turn is read as asked too, second."""
    out = [answered]
    first = max(len(context) - max(window, 0), 0)
    index = answered[0]
    offer = _offer(context, first, index, mask_style, follows, refuses)
    while len(out) <= earlier:
        found = answered_turn(context[first:index], window=window, mask_style=mask_style)
        if found is None:
            break
        between = context[first + found[0] + 1 : index]
        if closes is not None and any(t.role == "advisor" and closes(t.text) for t in between):
            followed = (
                follows is not None
                and follows(
                    context[index].text,
                    " ".join(t.text for t in between if t.role == "advisor"),
                )
                and not any(t.role == "advisor" and refuses(t.text) for t in between)
                if refuses is not None
                else False
            )
            if not followed:
                break
        index = first + found[0]
        out.append((index, found[1]))
    if offer is not None:
        out.insert(1, offer)
    return out


def _offer(
    context: Sequence[Turn],
    first: int,
    index: int,
    mask_style: str,
    follows: Callable[[str, str], bool] | None,
    refuses: Callable[[str], bool] | None,
) -> tuple[int, str] | None:
    """The advisor turn just before the customer turn ``index`` when that turn only asks
    the particulars of it (``follows``) and no advisor turn there refuses: (its index,
    its masked text)."""
    if follows is None or refuses is None:
        return None
    j = index
    while j > first and context[j - 1].role == "advisor":
        j -= 1
    said = context[j:index]
    if not said or any(refuses(t.text) for t in said):
        return None
    if not follows(context[index].text, " ".join(t.text for t in said)):
        return None
    # masked as a customer turn is (``model.answered_turn``)
    found = answered_turn([Turn("customer", said[-1].text)], window=1, mask_style=mask_style)
    return (index - 1, found[1]) if found is not None else None


def followed_turns(
    context: Sequence[Turn], asked: Sequence[tuple[int, str]], closes: Callable[[str], bool]
) -> frozenset[int]:
    """The indices of the turns in ``asked`` reached through a follow-up asking the
    particulars (「多少」, 「怎么付」): customer turns after which an advisor turn already
    answered outright (``DialogueRules.closes``), and the advisor's own offer."""
    out = set()
    for index, _ in asked[1:]:
        if context[index].role == "advisor" or any(
            t.role == "advisor" and closes(t.text) for t in context[index + 1 :]
        ):
            out.add(index)
    return frozenset(out)


def settled_turns(
    context: Sequence[Turn], asked: Sequence[tuple[int, str]], refuses: Callable[[str], bool]
) -> frozenset[int]:
    """The indices of the customer turns in ``asked`` that an advisor turn answering them
    (after them, before the customer speaks again) refuses or corrects
    (``DialogueRules.refuses``): in the development threads no advisor line after such a
    refusal was labelled a violation the question made."""
    out = set()
    for index, _ in asked:
        for t in context[index + 1 :]:
            if t.role != "advisor":
                break
            if refuses(t.text):
                out.add(index)
                break
    return frozenset(out)

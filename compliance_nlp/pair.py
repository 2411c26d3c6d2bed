"""The pair model: does this reply, read after that customer turn, break a rule?

The question/answer frames (``dialogue``) enumerate what a customer asks and how an
advisor goes along with it; they catch the phrasings they were written from and little
else. The pair model learns the same judgement from examples: a multinomial logistic
regression over hashed features of the customer turn, of the reply, and of the two
crossed through the reply's *stance* (assures, goes along, refuses or corrects, asks
back: ``rules/stance.json``, general chat vocabulary). 「是不是要暴雷了」 × assure reads as
disparagement whatever the assuring word is; 「U盾放你那」 × comply as account custody;
the same questions × refuse stay clean. Its labels are the violation categories and
``none``.

Small and numpy-only (a few MB of weights in ``models/pair/pair.npz``), trained in
seconds by ``training.pair_train`` (run by ``siyu nlp train``), so cross-validation can
hold out every annotator's thread file in turn. The analyzer consults it for an advisor
line with context that no rule, frame or model already made a violation
(``Analyzer._pair_findings``).
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ahocorasick

from compliance_nlp.model import MODELS_DIR
from compliance_nlp.normalize import normalize
from compliance_nlp.rules import RULES_DIR, RuleDataError, load_json

if TYPE_CHECKING:
    import numpy as np

__all__ = [
    "GOES_ON",
    "PAIR_FILE",
    "UNASKED_SCORE",
    "PairModel",
    "Stance",
    "pair_features",
    "pair_index",
    "read_text",
    "shipped_pair_dir",
]

PAIR_FILE = "pair.npz"
STANCE_FILE = "stance.json"
STANCES = ("assure", "comply", "refuse", "ask")
# Feature hashing: the weight matrix has this many rows (one per hashed feature).
DIM = 1 << 18
# Replies longer than this (normalised characters) are left to the line rules and model.
MAX_REPLY_CHARS = 48
# The least score of a finding after a customer turn that names nothing a rule forbids
# (no word of ``requests`` in stance.json), whatever the analyzer's threshold.
UNASKED_SCORE = 0.9
# Stance classes crossed with the question's bigrams.
_CROSSED = frozenset(("assure", "comply", "refuse", "^assure", "^comply", "^refuse", "nostance"))
_BREAKS = re.compile(r"[\s，,。.！!？?~～、；;：:…]+")
# One-character stance words read anywhere (punctuation and emoji carry their meaning).
_ALWAYS = frozenset("？?👌👍💪")
# An assurance or a yes negated in place is none: 好说 in 不好说, 回来 in 拿不回来,
# 绝对 in 没有绝对.
_NEGATORS = frozenset("不没难别未")
_NEGATORS2 = frozenset(("没有", "并非", "不是", "并不", "未必", "无法", "不能"))
# 没关系 after 跟/和 … says two things are unrelated (跟我们没关系), not "no problem".
_UNRELATED = frozenset(("没关系", "没啥关系", "没什么关系"))
_WITH = re.compile(r"(跟|和|与|同)[^，,。！!？?\s]{1,6}$")
# An answer ending in 的 (有的, 是的, 会的) is an answer only at the end of its piece or
# before a particle: 有的还会 is "some still will", 是的话 "if so".
_AFTER_ANSWER = frozenset("呢啊呀哈哦啦嘛吧哒滴喔噢了")
_LEAD = re.compile(
    r"^(?:(?:这个|那个|这种|那种|这样|这|那|哎呀|哎|唉|呃|哦|噢|啊|亲)[，,。!！~～\s]*)+"
)
# A refusal the reply goes on past (「不是哈，但放款快，我一直跟他们合作」): what follows
# the contrast is the answer, so the opening 「不是」 refuses nothing outright.
GOES_ON = re.compile(r"^[^，,。.！!？?]{0,6}[，,。.！!\s]+(?:但|不过|可是|只是)")
_LATIN_RE_ANY = re.compile("[a-z]")
_EMOJI_ONLY = frozenset("👌👍🆗✅🙆✌🤝💪😎😉😄😁😊🙏")


def shipped_pair_dir() -> Path:
    return MODELS_DIR / "pair"


def read_text(text: str, stance: Stance) -> str:
    """A turn as the pair model reads it: normalised, its pinyin words in characters."""
    return stance.romanise(normalize(text).text)


# A pinyin syllable (no tones): an answer typed without the input method
# (「shi de yi yang」, 「bu hui de fang xin」) is read through ``romanised`` in stance.json.
_SYLLABLE = re.compile(
    r"(?:zh|ch|sh|[bpmfdtnlgkhjqxrzcsyw])?"
    r"(?:iang|iong|uang|ueng|ang|eng|ing|ong|ian|iao|uai|uan|ai|ei|ao|ou|an|en|er|ia|ie|iu"
    r"|in|ua|uo|ui|un|ue|ve|a|o|e|i|u|v)"
)
_LATIN_RUN = re.compile(r"[a-z]+(?:[ '\-]+[a-z]+)*")
# The most syllables one ``romanised`` key holds.
_ROMAN_SPAN = 4


@lru_cache(maxsize=8192)
def syllables(token: str) -> tuple[str, ...] | None:
    """``token`` (lower-case Latin letters) split into the fewest pinyin syllables, or None
    when it is no pinyin (「app」, 「etf」)."""
    n = len(token)
    best: list[tuple[str, ...] | None] = [None] * (n + 1)
    best[n] = ()
    for i in range(n - 1, -1, -1):
        for j in range(min(n, i + 6), i, -1):
            rest = best[j]
            if rest is not None and _SYLLABLE.fullmatch(token, i, j):
                if best[i] is None or len(rest) + 1 < len(best[i] or ()):
                    best[i] = (token[i:j], *rest)
    return best[0]


@dataclass(frozen=True, slots=True)
class Stance:
    """Which stance classes a reply holds, and which it opens with."""

    words: dict[str, tuple[str, ...]]
    # What a customer turn asks about, per violation category (``requests`` in
    # stance.json: the forbidden thing named, in general words): the model crosses it
    # with the reply's stance and words, so what it learns of 「少不了您的」 after one
    # request for a gift carries to every other way of asking for one.
    requests: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # Pinyin written for words (``romanised`` in stance.json): syllables -> characters.
    romanised: dict[tuple[str, ...], str] = field(default_factory=dict)
    # Per class: the words of two or more characters, then the one-character words (the
    # order of ``words``: longest first).
    _split: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = field(
        init=False, repr=False, compare=False
    )
    _asks: dict[str, re.Pattern[str]] = field(init=False, repr=False, compare=False)
    # The words of two or more characters of every class, found in one pass over a reply
    # (None when there are none), and each class's words by their place in its order.
    _longer: Any = field(init=False, repr=False, compare=False)
    _rank: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)
    _yes: frozenset[str] = field(init=False, repr=False, compare=False)
    # Nouns that hold a stance word (``compounds`` in stance.json), found in one pass.
    compounds: tuple[str, ...] = ()
    _compounds: Any = field(init=False, repr=False, compare=False)
    # ``read`` per reply, kept: the analyzer and the model read the same reply.
    _reads: Any = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        asks = {
            name: re.compile("|".join(re.escape(w) for w in words))
            for name, words in self.requests.items()
            if words
        }
        object.__setattr__(self, "_asks", asks)
        object.__setattr__(self, "_reads", lru_cache(maxsize=4096)(self._read))
        split = {
            name: (
                tuple(w for w in words if len(w) > 1),
                tuple(w for w in words if len(w) == 1),
            )
            for name, words in self.words.items()
        }
        object.__setattr__(self, "_split", split)
        longer: Any = None
        if any(words for words, _ in split.values()):
            longer = ahocorasick.Automaton()
            for words, _ in split.values():
                for w in words:
                    longer.add_word(w, w)
            longer.make_automaton()
        object.__setattr__(self, "_longer", longer)
        rank = {name: {w: k for k, w in enumerate(words)} for name, (words, _) in split.items()}
        object.__setattr__(self, "_rank", rank)
        # The words read as a yes (assure, comply) that no other class holds.
        yes = {w for name in ("assure", "comply") for w in self.words.get(name, ())}
        others = {w for name in ("refuse", "ask") for w in self.words.get(name, ())}
        object.__setattr__(self, "_yes", frozenset(yes - others))
        compounds: Any = None
        if self.compounds:
            compounds = ahocorasick.Automaton()
            for w in self.compounds:
                compounds.add_word(w, w)
            compounds.make_automaton()
        object.__setattr__(self, "_compounds", compounds)

    @classmethod
    def load(cls, directory: str = "") -> Stance:
        where = Path(directory) if directory else None
        if where is not None and not (where / STANCE_FILE).is_file():
            where = RULES_DIR
        data = load_json(STANCE_FILE, where)
        classes = data.get("classes")
        if not isinstance(classes, dict) or set(classes) != set(STANCES):
            raise RuleDataError(f"{STANCE_FILE}: classes must be exactly {STANCES}")
        words = {}
        for name in STANCES:
            raw = classes[name]
            if not isinstance(raw, list) or not all(isinstance(w, str) and w for w in raw):
                raise RuleDataError(f"{STANCE_FILE}: {name} must be a list of words")
            # Longest first: 「不会少」 is read before 「不会」.
            words[name] = tuple(sorted({w.lower() for w in raw}, key=lambda w: (-len(w), w)))
        raw_requests = data.get("requests", {})
        if not isinstance(raw_requests, dict):
            raise RuleDataError(f"{STANCE_FILE}: requests must map a category to words")
        requests = {}
        for name, raw in raw_requests.items():
            if not isinstance(raw, list) or not all(isinstance(w, str) and w for w in raw):
                raise RuleDataError(f"{STANCE_FILE}: requests.{name} must be a list of words")
            requests[str(name)] = tuple(sorted({w.lower() for w in raw}, key=len, reverse=True))
        raw_roman = data.get("romanised", {})
        if not isinstance(raw_roman, dict):
            raise RuleDataError(f"{STANCE_FILE}: romanised must map pinyin to characters")
        romanised: dict[tuple[str, ...], str] = {}
        for key, value in raw_roman.items():
            if key.startswith("_"):
                continue
            parts = tuple(
                s for t in re.split(r"[ '\-]+", str(key).lower()) for s in syllables(t) or (t,)
            )
            if not isinstance(value, str) or not value or len(parts) > _ROMAN_SPAN:
                raise RuleDataError(f"{STANCE_FILE}: romanised.{key} must be a short word")
            romanised[parts] = value
        raw_compounds = data.get("compounds", [])
        if not isinstance(raw_compounds, list) or not all(
            isinstance(w, str) and w for w in raw_compounds
        ):
            raise RuleDataError(f"{STANCE_FILE}: compounds must be a list of words")
        compounds = tuple(sorted({w.lower() for w in raw_compounds}))
        return cls(words, requests, romanised, compounds)

    def romanise(self, text: str) -> str:
        """``text`` (normalised, lower case) with its pinyin runs written in characters
        where ``romanised`` knows the words: a run of two or more pinyin words
        (「zhe ge chan pin bao ben ma」 → 这个产品保本吗), a single word of two or more
        syllables the list holds whole (「fangxin」), or a chat abbreviation (「kk」).
        Syllables the list does not know stay as written; English and product codes
        (「app」, 「etf」) are no pinyin and stay."""
        if not self.romanised or _LATIN_RE_ANY.search(text) is None:
            return text
        return _LATIN_RUN.sub(self._romanise_run, text)

    def _romanise_run(self, match: re.Match[str]) -> str:
        run = match.group(0)
        tokens = [t for t in re.split(r"[ '\-]+", run) if t]
        parts: list[str] = []
        for t in tokens:
            found = syllables(t)
            if found is None:
                if len(tokens) == 1 and (t,) in self.romanised:
                    return self.romanised[(t,)]
                return run
            parts.extend(found)
        if len(tokens) == 1 and (len(parts) < 2 or tuple(parts) not in self.romanised):
            return run  # 「a股」, 「ma」: one syllable alone is no evidence of pinyin
        out: list[str] = []
        i = 0
        while i < len(parts):
            for span in range(min(_ROMAN_SPAN, len(parts) - i), 0, -1):
                word = self.romanised.get(tuple(parts[i : i + span]))
                if word is not None:
                    out.append(word)
                    i += span
                    break
            else:
                if out and out[-1][-1:].isascii():
                    out.append(" ")
                out.append(parts[i])
                i += 1
        return "".join(out)

    def asks(self, question: str) -> list[str]:
        """The categories whose forbidden thing a normalised customer turn names."""
        return [name for name, pattern in self._asks.items() if pattern.search(question)]

    def read(self, reply: str) -> list[str]:
        """Stance tokens of a normalised reply: ``name`` for each class present,
        ``^name`` for the class of its opening word, ``name:word`` for each word."""
        return list(self._reads(reply))

    def _stands(self, reply: str, end: int, word: str) -> bool:
        """Whether the assurance or compliance ``word`` ending at ``end`` is that word
        where it stands: not negated in place (「不好说」, 「拿不回来」) and, for an answer
        ending in 的, not the head of a longer phrase (「有的还会跌」)."""
        if word not in self._yes:
            return True
        start = end - len(word) + 1
        if start > 0 and reply[start - 1] in _NEGATORS:
            return False
        if reply[max(start - 2, 0) : start] in _NEGATORS2:
            return False
        if any(a <= start and end < b for a, b in self._compound_spans(reply)):
            return False  # 保证 in 保证金
        if word in _UNRELATED and _WITH.search(reply, max(start - 8, 0), start):
            return False  # 跟我们没关系: unrelated, not "no problem"
        after = reply[end + 1 : end + 2]
        return not (
            word.endswith("的") and "\u4e00" <= after <= "\u9fff" and after not in _AFTER_ANSWER
        )

    def _compound_spans(self, reply: str) -> list[tuple[int, int]]:
        """Where the nouns that hold a stance word (``compounds`` in stance.json: 保证金,
        一定比例) stand in ``reply``: [start, end) spans."""
        if self._compounds is None:
            return []
        return [(end - len(w) + 1, end + 1) for end, w in self._compounds.iter(reply)]

    def _read(self, reply: str) -> tuple[str, ...]:
        out: list[str] = []
        # A one-character word counts only as a short piece of its own (「对」, 「是啊」,
        # 「行吧」): inside a longer piece 是 and 准 are no answer (「不是」, 「说不准」).
        starts = {p[0] for p in _BREAKS.split(reply) if p and len(p) <= 3}
        found: dict[str, list[str]] = {}
        present = (
            {w for end, w in self._longer.iter(reply) if self._stands(reply, end, w)}
            if self._longer is not None
            else ()
        )
        for name in STANCES:
            _, single = self._split[name]
            rank = self._rank[name]
            found[name] = sorted((w for w in present if w in rank), key=rank.__getitem__) + [
                w for w in single if w in starts or (w in _ALWAYS and w in reply)
            ]
        every = {w for hits in found.values() for w in hits}
        # The opening word is read past a filler or a pointer (「这个不行」, 「哎，不能」).
        opening = _LEAD.sub("", reply, count=1)
        for name in STANCES:
            # A word only ever inside a longer word found (保证 in 不保证) is that word.
            hits = [
                w
                for w in found[name]
                if not any(
                    len(o) > len(w) and w in o and reply.count(w) == reply.count(o) for o in every
                )
            ]
            if not hits:
                continue
            out.append(name)
            out.extend(f"{name}:{w}" for w in hits[:6])
            if any(opening.startswith(w) for w in hits):
                out.append(f"^{name}")
        if not out:
            out.append("nostance")
        return tuple(out)


def _grams(text: str, prefix: str, sizes: Iterable[int]) -> list[str]:
    out: list[str] = []
    for n in sizes:
        head = f"{prefix}{n}:"
        out += [head + text[i : i + n] for i in range(len(text) - n + 1)]
    return out


def _length_bucket(n: int) -> str:
    for bound in (0, 2, 5, 10, 20, 48):
        if n <= bound:
            return str(bound)
    return "long"


@dataclass(frozen=True, slots=True)
class PairParts:
    """What ``pair_index`` hashes: named features, and the two crossings (what the
    customer asked — its bigrams, the categories its words name — by how the reply
    answers it: its stance classes, its stance words and bigrams)."""

    features: list[str]
    qgrams: list[str]
    classes: list[str]
    categories: list[str]
    words: list[str]


_Side = tuple[list[str], list[str], list[str]]


def _question_side(question: str, stance: Stance) -> _Side:
    """The customer turn's named features, its bigrams (crossed with the reply's stance)
    and the categories its words name."""
    q = question.replace(" ", "")
    qgrams = _grams(q, "q", (2,))
    return _grams(q, "q", (1, 3)) + qgrams, qgrams, stance.asks(q)


def _reply_side(
    reply: str, reply_raw: str, stance: Stance
) -> tuple[list[str], list[str], list[str]]:
    """The reply's named features, its stance classes and its words (stance words and
    character uni/bigrams, crossed with what the turn asks for)."""
    r = reply.replace(" ", "")
    feats = ["bias", f"rlen:{_length_bucket(len(r))}"]
    raw = reply_raw.strip()
    emoji_only = bool(raw and not r and all(c in _EMOJI_ONLY or not c.isalnum() for c in raw))
    if emoji_only:
        feats.append("emoji_only")
    r12 = _grams(r, "r", (1, 2))
    feats += r12 + _grams(r, "r", (3,))
    feats += [f"r^:{r[:2]}", f"r$:{r[-2:]}"]
    tokens = stance.read(r) if r else (["assure", "^assure"] if emoji_only else [])
    feats += [f"s:{t}" for t in tokens]
    classes = [t for t in tokens if t in _CROSSED]
    words = [f"s:{t}" for t in tokens if ":" in t] + r12
    return feats, classes, words


def _asked_features(categories: Sequence[str], classes: Sequence[str]) -> list[str]:
    out = []
    for cat in categories:
        out.append(f"qc:{cat}")
        out += [f"xc:{cat}|{c}" for c in classes]
    return out


def pair_parts(question: str, reply: str, reply_raw: str, stance: Stance) -> PairParts:
    """Features of (customer turn, reply); both normalised (``normalize(...).text``)
    except ``reply_raw``, the reply as written (its emoji)."""
    qfeats, qgrams, categories = _question_side(question, stance)
    rfeats, classes, words = _reply_side(reply, reply_raw, stance)
    feats = rfeats + qfeats + _asked_features(categories, classes)
    return PairParts(feats, qgrams, classes, categories, words)


def pair_features(question: str, reply: str, reply_raw: str, stance: Stance) -> list[str]:
    """The named features of (customer turn, reply) (``pair_parts``), crossings apart."""
    return pair_parts(question, reply, reply_raw, stance).features


_HASHES: dict[str, int] = {}
_CROSS_IDS = {name: k + 1 for k, name in enumerate(sorted(_CROSSED))}


def _hash(name: str) -> int:
    value = _HASHES.get(name)
    if value is None:
        if len(_HASHES) > 500_000:  # bounded: features of text never seen again
            _HASHES.clear()
        value = _HASHES[name] = zlib.crc32(name.encode("utf-8")) % DIM
    return value


def hashed(features: Sequence[str]) -> np.ndarray:
    import numpy as np  # loaded with the model only: a receiver never needs it

    values = list(map(_HASHES.get, features))
    if None in values:
        values = [_hash(f) if v is None else v for f, v in zip(features, values, strict=True)]
    return np.array(values, dtype=np.int64)


def _crossed(rows: np.ndarray, ids: Sequence[int]) -> np.ndarray:
    """Each hashed feature of ``rows`` crossed with each id (a stance class, a category):
    arithmetic on the hashes, no feature names built."""
    import numpy as np

    tags = np.asarray(ids, dtype=np.int64)[:, None] * 1_000_003
    return ((rows[None, :] * 131 + tags) % DIM).ravel()


def _unique(rows: np.ndarray) -> np.ndarray:
    """``np.unique(rows)`` (sorted, each value once) without its per-call overhead."""
    import numpy as np

    rows = np.sort(rows)
    keep = np.empty(len(rows), dtype=bool)
    keep[:1] = True
    np.not_equal(rows[1:], rows[:-1], out=keep[1:])
    return rows[keep]


# One side hashed: (rows of its named features, rows to cross, names to cross by).
_Hashed = tuple[Any, Any, list[str]]


def _hashed_question(question: str, stance: Stance) -> _Hashed:
    feats, qgrams, categories = _question_side(question, stance)
    return hashed(feats), hashed(qgrams), categories


def _hashed_reply(reply: str, reply_raw: str, stance: Stance) -> _Hashed:
    feats, classes, words = _reply_side(reply, reply_raw, stance)
    return hashed(feats), hashed(words), classes


def _rows(q: _Hashed, r: _Hashed, stance: Stance) -> np.ndarray:
    import numpy as np

    qrows, qgrams, categories = q
    rrows, words, classes = r
    out = [rrows, qrows]
    if categories:
        out.append(hashed(_asked_features(categories, classes)))
    if classes and len(qgrams):
        # What the customer asked, by how the reply answers it.
        out.append(_crossed(qgrams, [_CROSS_IDS[c] for c in classes]))
    if categories and len(words):
        # What the turn asks for, by the reply's stance words and its own words.
        order = sorted(stance.requests)
        out.append(_crossed(words, [100 + order.index(c) for c in categories]))
    return np.concatenate(out)


def pair_index(question: str, reply: str, reply_raw: str, stance: Stance) -> np.ndarray:
    """Hashed feature rows of (customer turn, reply) (arguments as ``pair_parts``)."""
    return _rows(
        _hashed_question(question, stance), _hashed_reply(reply, reply_raw, stance), stance
    )


class PairModel:
    """Weights of a trained pair model (``pair.npz``); ``proba`` is pure."""

    def __init__(self, directory: Path, *, rules_dir: str = "") -> None:
        import numpy as np

        path = directory / PAIR_FILE
        with np.load(path, allow_pickle=False) as data:
            self.weights = data["weights"].astype(np.float32)
            self.bias = data["bias"].astype(np.float32)
            self.labels = tuple(str(x) for x in data["labels"])
            meta: dict[str, Any] = json.loads(str(data["meta"]))
        if self.weights.shape != (DIM, len(self.labels)):
            raise ValueError(f"{path}: weights of shape {self.weights.shape}, expected {DIM}")
        self.version = str(meta.get("version", "?"))
        self.name = str(meta.get("name", "siyu-pair-logreg"))
        self.stance = Stance.load(rules_dir)
        self._read = lru_cache(maxsize=4096)(lambda text: read_text(text, self.stance))
        # A customer turn is read by the replies after it, a reply with each turn it may
        # answer: each side is hashed once.
        self._question = lru_cache(maxsize=4096)(
            lambda text: _hashed_question(self._read(text), self.stance)
        )
        self._reply = lru_cache(maxsize=4096)(
            lambda text: _hashed_reply(self._read(text), text.lower(), self.stance)
        )

    def asks(self, text: str) -> bool:
        """Whether a customer turn (as written) names something a rule forbids."""
        return bool(self.stance.asks(self._read(text)))

    def proba(self, pairs: Sequence[tuple[str, str]]) -> np.ndarray:
        """Label probabilities per (customer turn, advisor reply), as written."""
        import numpy as np

        # Each feature row once, as the model was trained (``pair_train._featurise``):
        # a bigram a turn repeats is no more evidence than one it says once.
        rows = [
            _unique(_rows(self._question(question), self._reply(reply), self.stance))
            for question, reply in pairs
        ]
        # Each pair's rows summed in order (one ``sum(axis=0)`` per pair; a batched
        # ``reduceat`` adds them in another order, and the last bits differ).
        logits = np.zeros((len(pairs), len(self.labels)), dtype=np.float32)
        for k, r in enumerate(rows):
            logits[k] = self.weights.take(r, axis=0).sum(axis=0)
        logits += self.bias
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        out: np.ndarray = e / e.sum(axis=1, keepdims=True)
        return out


def load_pair_model(directory: str = "", *, rules_dir: str = "") -> PairModel | None:
    """The pair model in ``directory``, or the shipped one; None when none is trained."""
    where = Path(directory) if directory else shipped_pair_dir()
    if not (where / PAIR_FILE).is_file():
        if directory:
            raise FileNotFoundError(f"no {PAIR_FILE} in {where}")
        return None
    return PairModel(where, rules_dir=rules_dir)

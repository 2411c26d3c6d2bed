"""Evasion-resistant text normalisation with an offset map back to the original.

Advisors who know a lexicon exists write around it: 穩賺 (traditional), ｂａｏ (full
width), 保.本 / 稳 赚 (separators inside a word), 稳😀赚 (emoji), VX / 薇信 / 加v (WeChat
variants used to move a customer off the archived WeCom channel). Rules run on the
normalised text, but a compliance reviewer must see the evidence highlighted in what the
advisor actually wrote, so every normalised character keeps the original span it came from.

Two stages:

1. a 1:1 character translation (width, case, traditional→simplified): offsets unchanged,
   which is why PII detection runs on this stage's output;
2. edits that delete or replace runs (separators, emoji, zero-width characters, WeChat
   variants, repeated punctuation), recorded in ``starts``/``ends``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

__all__ = ["Normalized", "normalize", "translate_chars"]

_CJK = "\u3400-\u4dbf\u4e00-\u9fff"
_EMOJI = (
    "\U0001f000-\U0001faff\u2600-\u27bf\u2b00-\u2bff\ufe0f\u200d\u20e3"
    "\u2190-\u21ff\u2300-\u23ff\u25a0-\u25ff\u3030\u303d\u3297\u3299"
)
_ZERO_WIDTH = "\u200b\u200c\u200e\u200f\u2060\ufeff\u00ad"
# Characters used to split a word so a plain substring match misses it (保.本, 稳 赚).
# Quotes are deliberately absent: quotation is a signal the rules need to see.
_SEPARATORS = r"\s\.\*\-_·•|/\\~^#=`+…、—～" + _EMOJI + _ZERO_WIDTH

# Emoji that stand for a word the rules read (「把📱给我」 hands over the phone): read as
# the word instead of being dropped with the rest.
_ICON_WORDS = {"📱": "手机", "📲": "手机", "💳": "卡", "💩": "垃圾", "🗑": "垃圾"}

# Order matters: WeChat variants before generic separators, so "v.x" becomes 微信, and
# word emoji before the separators and emoji that are dropped.
_EDIT_RE = re.compile(
    "|".join(
        [
            # 加v / +v / ➕微 : "add me on (personal) WeChat" written to dodge the lexicon
            r"(?P<addv>(?:加|\+|➕|家)[\s\.\*·_\-]*(?:v|w|微|薇|威|徽)(?![a-z信芯心❤]))",
            # VX, WX, v信, 薇信, 威信, 微❤, wechat, weixin
            r"(?P<wechat>(?<![a-z])(?:v|w)[\s\.\*·_\-]*x(?![a-z])|(?:v|w|薇|威|徽|危)"
            r"[\s\.\*·_\-]*(?:信|芯|❤)|微[\s\.\*·_\-]*(?:芯|❤|心(?=号|联系|聊|上))"
            r"|(?<![a-z])(?:wechat|weixin)(?![a-z]))",
            "(?P<icon>" + "|".join(_ICON_WORDS) + ")",
            rf"(?P<sep>(?<=[{_CJK}])[{_SEPARATORS}]+(?=[{_CJK}]))",
            rf"(?P<noise>[{_EMOJI}{_ZERO_WIDTH}]+)",
            r"(?P<punct>(?P<pc>[!?！？。，,~～])(?P=pc)+|…{2,}|\.{3,})",
        ]
    )
)
_RULES_DIR = Path(__file__).resolve().parent / "rules"
_LATIN_RE = re.compile("[a-z]")


@lru_cache(maxsize=1)
def _pinyin_words() -> dict[str, str]:
    data = json.loads((_RULES_DIR / "pinyin.json").read_text(encoding="utf-8"))
    return {str(k).lower(): str(v) for k, v in data["words"].items()}


@lru_cache(maxsize=1)
def _pinyin_re() -> re.Pattern[str]:
    """A whole Latin run that is a listed pinyin word and touches a Chinese character."""
    words = "|".join(sorted(map(re.escape, _pinyin_words()), key=len, reverse=True))
    return re.compile(rf"(?<![a-z])(?:(?<=[{_CJK}])(?:{words})|(?:{words})(?=[{_CJK}]))(?![a-z])")


_WIDTH_PUNCT = {
    0x3000: " ",  # ideographic space
}


@lru_cache(maxsize=1)
def _translation_table() -> dict[int, str]:
    """Full→half width, upper→lower, traditional→simplified, all strictly 1:1."""
    table: dict[int, str] = {}
    for code in range(0xFF01, 0xFF5F):
        table[code] = chr(code - 0xFEE0).lower()
    table.update(_WIDTH_PUNCT)
    # Keep Chinese sentence punctuation full width: the clause splitter relies on it.
    for ch in "，。！？；：（）":
        table.pop(ord(ch), None)
    for code in range(ord("A"), ord("Z") + 1):
        table[code] = chr(code + 32)
    table.update(_traditional_table())
    return table


def _traditional_table() -> dict[int, str]:
    """Single-character traditional→simplified map from OpenCC's data.

    OpenCC's phrase conversion can change text length; rules only need character
    folding (穩賺→稳赚), and a 1:1 map keeps offsets exact.
    """
    table: dict[int, str] = {}
    try:
        import opencc

        path = Path(opencc.__file__).parent / "dictionary" / "TSCharacters.txt"
        lines = path.read_text(encoding="utf-8").splitlines()
    except (ImportError, OSError):  # pragma: no cover - fallback keeps the library usable
        lines = [
            f"{t}\t{s}"
            for t, s in zip(
                "穩賺保證險額產財紅義務個點萬億", "稳赚保证险额产财红义务个点万亿", strict=True
            )
        ]
    for line in lines:
        src, _, dst = line.partition("\t")
        target = dst.split(" ")[0] if dst else ""
        if len(src) == 1 and len(target) == 1 and src != target:
            table[ord(src)] = target
    return table


def translate_chars(text: str) -> str:
    """Stage 1 only: same length as ``text``, so offsets need no mapping."""
    return text.translate(_translation_table())


def _edits(stage1: str) -> list[tuple[int, int, str, str]]:
    """Stage-2 edits as ``(start, end, kind, replacement)``, in order, never overlapping."""
    found: list[tuple[int, int, str, str]] = []
    for match in _EDIT_RE.finditer(stage1):
        kind = match.lastgroup or ""
        if kind == "addv":
            replacement = "加微信"
        elif kind == "wechat":
            replacement = "微信"
        elif kind == "punct":
            replacement = match.group(0)[0]
        elif kind == "icon":
            replacement = _ICON_WORDS[match.group(0)]
        else:  # separators and emoji are dropped
            replacement = ""
        found.append((match.start(), match.end(), kind, replacement))
    # Pinyin needs a Latin run beside a Chinese character; most lines have neither.
    if stage1.isascii() or _LATIN_RE.search(stage1) is None:
        return found
    words = _pinyin_words()
    pinyin = [
        (m.start(), m.end(), "pinyin", words[m.group(0)]) for m in _pinyin_re().finditer(stage1)
    ]
    if not pinyin:
        return found
    merged: list[tuple[int, int, str, str]] = []
    for edit in sorted(found + pinyin):
        if merged and edit[0] < merged[-1][1]:
            continue
        merged.append(edit)
    return merged


@dataclass(frozen=True, slots=True)
class Normalized:
    """Normalised text plus, for each character, the original span it came from.

    ``starts``/``ends`` are ``None`` when stage 2 changed nothing (the common case),
    which keeps the hot path allocation-free.
    """

    original: str
    text: str
    starts: tuple[int, ...] | None = None
    ends: tuple[int, ...] | None = None
    evasions: tuple[tuple[int, int], ...] = ()

    def to_original(self, start: int, end: int) -> tuple[int, int]:
        """Map a normalised ``[start, end)`` span to the original text."""
        if self.starts is None or self.ends is None:
            return start, end
        if start >= end:
            pos = self.starts[start] if start < len(self.starts) else len(self.original)
            return pos, pos
        return self.starts[start], self.ends[end - 1]

    def overlaps_evasion(self, start: int, end: int) -> bool:
        """True when a normalised span covers text that was spelled to evade the lexicon."""
        return any(s < end and start < e for s, e in self.evasions)


# A chat line is normalised by the analyzer, then again as a context turn of the lines
# after it (the frames, the pair model, the violation model's input): short texts are
# kept (``Normalized`` is immutable), long ones are not, so the cache stays a few MB.
_CACHED_CHARS = 256


def normalize(text: str) -> Normalized:
    """Normalise ``text`` for matching; see the module docstring for what and why."""
    if len(text) <= _CACHED_CHARS:
        return _normalize_short(text)
    return _normalize(text)


def _normalize(text: str) -> Normalized:
    stage1 = translate_chars(text)
    edits = _edits(stage1)
    if not edits:
        return Normalized(text, stage1)
    out: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    evasions: list[tuple[int, int]] = []
    pos = 0
    for a, b, kind, replacement in edits:
        if a > pos:
            out.append(stage1[pos:a])
            starts.extend(range(pos, a))
            ends.extend(range(pos + 1, a + 1))
        if kind in ("addv", "wechat", "sep", "pinyin"):
            evasions.append((len(starts), len(starts) + len(replacement)))
        if replacement:
            out.append(replacement)
            starts.extend([a] * len(replacement))
            ends.extend([b] * len(replacement))
        pos = b
    if pos < len(stage1):
        out.append(stage1[pos:])
        starts.extend(range(pos, len(stage1)))
        ends.extend(range(pos + 1, len(stage1) + 1))
    # A dropped separator marks the join point: record the two characters around it.
    fixed: list[tuple[int, int]] = []
    for s, e in evasions:
        fixed.append((max(0, s - 1), e + 1) if s == e else (s, e))
    return Normalized(text, "".join(out), tuple(starts), tuple(ends), tuple(fixed))


_normalize_short = lru_cache(maxsize=4096)(_normalize)

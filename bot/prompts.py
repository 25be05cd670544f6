"""Character names, @mention parsing and per-provider prompt rendering.

Names
    2-32 *word characters* after NFKC normalisation. A word character is what Python's `\\w` matches
    (letters, digits, `_`) plus combining marks (categories Mn/Mc, so `@राम` and Thai names work),
    minus invisible default-ignorable ones (variation selectors, Hangul fillers, U+034F...). A name
    must contain at least one letter (so `@2024`, `<@123>` and `@__` are never names), must not start
    with a combining mark or start/end with `_` (markdown), may stack at most 4 marks, and is not
    `everyone`/`here`. Names are compared by `name_key`: NFKC, casefold, NFKC again, so `Anna`,
    `ＡＮＮＡ` (fullwidth) and `𝐚𝐧𝐧𝐚` (math bold) are one name. Cross-script look-alikes (Latin `a`
    vs Cyrillic `а`) are not folded by NFKC: `name_skeleton` folds them, and a guild never holds two
    names with one skeleton (nor a name that looks like `everyone` or `here`).

Mentions
    `@name` (also fullwidth `＠`) where the `@` is not preceded by a word character, so `a@b.com`
    is no mention. Underscores right before the `@` or after the name are markdown (`_@anna_`,
    `__@anna__`), but `@anna_b` is the name `anna_b`. A mention directly following another one
    (`@anna@bob`) is a mention too: a missing space, not an e-mail address. The whole run of word
    characters is the name, so `@anna` is never `@ann` + `a`. Runs that cannot be a name (`@2024`,
    `@everyone`, 33+ characters) are not mentions, and Discord's `<@123>`, `<@!123>`, `<@&123>` never are.
"""

from __future__ import annotations

import difflib
import enum
import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from disarm import skeleton_key

NAME_MIN, NAME_MAX = 2, 32
MAX_STACKED_MARKS = 4
RESERVED_NAMES = frozenset({"everyone", "here"})
AT_SIGNS = "@\uff20\ufe6b"  # '@', fullwidth '＠', small '﹫' (NFKC folds both to '@')

# Invisible code points that `\w` or the mark categories would otherwise let into a name.
_IGNORABLE = r"\u034f\u115f\u1160\u17b4\u17b5\u180b-\u180f\u3164\ufe00-\ufe0f\uffa0\U000e0100-\U000e01ef"


def _mark_class() -> str:
    """Regex ranges of the combining marks (Mn, Mc); they all lie in U+0300..U+1FFFF or plane 14."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x300, 0x20000):
        if unicodedata.category(chr(cp)) in ("Mn", "Mc"):
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))

    def esc(cp: int) -> str:
        return f"\\u{cp:04x}" if cp <= 0xFFFF else f"\\U{cp:08x}"

    return "".join(esc(a) if a == b else f"{esc(a)}-{esc(b)}" for a, b in ranges)


_WORD = rf"(?:(?![{_IGNORABLE}])[\w{_mark_class()}])"
_WORD_CHAR = re.compile(_WORD)
_IGNORABLE_RE = re.compile(f"[{_IGNORABLE}]")
_CANDIDATE = re.compile(rf"[{AT_SIGNS}]({_WORD}+)")
_DISCORD_TAIL = re.compile(r"[!&]?[0-9]+>")  # after '<@': a user or role mention

NAME_RE = re.compile(rf"{_WORD}{{{NAME_MIN},{NAME_MAX}}}")
"""The *syntax* of a normalised name (use with fullmatch); validate_character_name has every rule."""


class NameProblem(enum.StrEnum):
    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    INVALID_CHARACTERS = "invalid_characters"
    STARTS_WITH_MARK = "starts_with_mark"
    TOO_MANY_MARKS = "too_many_marks"
    EDGE_UNDERSCORE = "edge_underscore"
    NO_LETTER = "no_letter"
    RESERVED = "reserved"


class InvalidName(ValueError):
    """A refused character name. `reason_id` is stable (for i18n), `detail` is English for humans,
    `chars` are the offending characters for INVALID_CHARACTERS."""

    def __init__(self, reason_id: NameProblem, detail: str, chars: tuple[str, ...] = ()) -> None:
        super().__init__(reason_id, detail)
        self.reason_id = reason_id
        self.detail = detail
        self.chars = chars

    def __str__(self) -> str:
        return f"{self.reason_id}: {self.detail}"


@dataclass(frozen=True)
class Mention:
    key: str  # name_key of the name, without '@'
    written: str  # the name as the member wrote it
    start: int  # span of '@name' in the text
    end: int


def is_word_char(ch: str) -> bool:
    return len(ch) == 1 and _WORD_CHAR.match(ch) is not None


def name_key(name: str) -> str:
    """The form names are compared in: NFKC, casefolded, NFKC again (casefolding can denormalise)."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def name_skeleton(name: str) -> str:
    """The form look-alike names share (Unicode TR39 confusable skeleton, case folded): Latin
    `mossa`, Cyrillic `mоssа` and `MOSSA` are one skeleton, as are `Ione` and `lone`. Names are
    unique per guild by this form, and a mention that matches no name exactly finds the name it
    looks like. The confusables data comes from `disarm` (Unicode's confusables.txt)."""
    return skeleton_key(unicodedata.normalize("NFKC", name), digit_policy="tr39")


RESERVED_SKELETONS = frozenset(name_skeleton(n) for n in RESERVED_NAMES)


def describe_char(ch: str) -> str:
    """`'-' (U+002D HYPHEN-MINUS)`; invisible characters by code point only: `U+200B ZERO WIDTH SPACE`."""
    code = f"U+{ord(ch):04X}"
    label = unicodedata.name(ch, "")
    if not label and unicodedata.category(ch) == "Cc":
        label = "<control>"
    full = f"{code} {label}".rstrip()
    visible = unicodedata.category(ch)[0] not in "CZM" and not _IGNORABLE_RE.match(ch)
    return f"'{ch}' ({full})" if visible else full


def _problem(name: str) -> InvalidName | None:
    """The first rule an NFKC-normalised name breaks, or None."""
    if not name:
        return InvalidName(NameProblem.TOO_SHORT, f"a name needs at least {NAME_MIN} characters")
    bad = tuple(dict.fromkeys(ch for ch in name if not is_word_char(ch)))
    if bad:
        listed = ", ".join(describe_char(ch) for ch in bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        return InvalidName(NameProblem.INVALID_CHARACTERS, f"only letters, digits and _ are allowed, not {listed}", bad)
    if len(name) < NAME_MIN:
        return InvalidName(NameProblem.TOO_SHORT, f"a name needs at least {NAME_MIN} characters")
    if len(name) > NAME_MAX:
        return InvalidName(NameProblem.TOO_LONG, f"a name has at most {NAME_MAX} characters, not {len(name)}")
    marks = [unicodedata.category(ch)[0] == "M" for ch in name]
    if marks[0]:
        return InvalidName(NameProblem.STARTS_WITH_MARK, "a name cannot start with a combining mark")
    run = 0
    for is_mark in marks:
        run = run + 1 if is_mark else 0
        if run > MAX_STACKED_MARKS:
            return InvalidName(NameProblem.TOO_MANY_MARKS, f"at most {MAX_STACKED_MARKS} combining marks in a row")
    if name[0] == "_" or name[-1] == "_":
        return InvalidName(NameProblem.EDGE_UNDERSCORE, "a name cannot start or end with _")
    if not any(unicodedata.category(ch)[0] == "L" for ch in name):
        return InvalidName(NameProblem.NO_LETTER, "a name needs at least one letter")
    if name_key(name) in RESERVED_NAMES or name_skeleton(name) in RESERVED_SKELETONS:
        return InvalidName(NameProblem.RESERVED, f"{name} is reserved by Discord")
    return None


def validate_character_name(name: str) -> str:
    """The normalised (NFKC) name, case kept; raises InvalidName. Surrounding spaces and one leading
    '@' are dropped, since members often type the name the way they would mention it."""
    text = name.strip()
    if text[:1] and text[0] in AT_SIGNS:
        text = text[1:]
    normalised = unicodedata.normalize("NFKC", text)
    problem = _problem(normalised)
    if problem is not None:
        raise problem
    return normalised


def _boundary_ok(text: str, at: int, prev_end: int) -> bool:
    """An '@' starts a mention unless a word character precedes it (markdown underscores aside)."""
    i = at
    while i > 0 and text[i - 1] == "_":
        i -= 1
    return i == 0 or i == prev_end or not is_word_char(text[i - 1])


def find_mentions(text: str, known: Iterable[str] | None = None) -> list[Mention]:
    """Every @mention in `text`, in order, known or not (so unknown names can be reported).

    `known` is accepted for callers that have the guild's names at hand; the result does not depend
    on it, because the whole word after '@' is always the name. Compare `Mention.key` with `name_key`.
    """
    del known
    found: list[Mention] = []
    prev_end = -1
    for m in _CANDIDATE.finditer(text):
        at = m.start()
        if not _boundary_ok(text, at, prev_end):
            continue
        if at > 0 and text[at - 1] == "<" and _DISCORD_TAIL.match(text, at + 1):
            continue
        written = m.group(1).rstrip("_")  # trailing underscores close markdown italics
        if _problem(unicodedata.normalize("NFKC", written)) is not None:
            continue
        end = at + 1 + len(written)
        found.append(Mention(name_key(written), written, at, end))
        prev_end = end
    return found


def distinct_keys(mentions: Iterable[Mention]) -> list[str]:
    """Mentioned names in order of first mention, without repeats."""
    return list(dict.fromkeys(m.key for m in mentions))


def _needs_gap(pieces: list[str], token: str) -> bool:
    """Would `token` glue onto the text before it (`pieces`) into a new word or mention
    (`@@anna` -> `@Anna`, `@bo@anna` -> `@bob`)?"""
    if not token or not is_word_char(token[0]):
        return False
    run = ""  # the word characters right before the token
    stop = ""  # the character before them
    for ch in (c for piece in reversed(pieces) for c in reversed(piece)):
        if not is_word_char(ch):
            stop = ch
            break
        run += ch
    if run:
        return bool(run.strip("_"))  # bare markdown underscores (`_@anna_`) stay tight
    return stop in AT_SIGNS if stop else False


def replace_mentions(text: str, tokens: Mapping[str, str]) -> str:
    """Replace each mention whose name is in `tokens` (keys compared by name_key) with its token;
    leave other text alone. A space is inserted only where the token would otherwise merge with
    the text before it into a different word or a new mention."""
    if not tokens:
        return text
    table = {name_key(k): v for k, v in tokens.items()}
    out: list[str] = []
    last = 0
    for m in find_mentions(text):
        token = table.get(m.key)
        if token is None:
            continue
        out.append(text[last : m.start])
        if _needs_gap(out, token):
            out.append(" ")
        out.append(token)
        last = m.end
    out.append(text[last:])
    return "".join(out)


def close_matches(word: str, candidates: Iterable[str], n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Up to `n` candidates that look like `word`, best first, for "did you mean ...?"."""
    key = name_key(word.lstrip(AT_SIGNS))
    by_key: dict[str, str] = {}
    for c in candidates:
        by_key.setdefault(name_key(c), c)
    keys = difflib.get_close_matches(key, list(by_key), n=n, cutoff=cutoff)
    if len(keys) < n and len(key) >= NAME_MIN:
        # a prefix is a strong hint even when the similarity ratio is low ("ann" -> "annabelle")
        prefixed = sorted(
            (k for k in by_key if k not in keys and (k.startswith(key) or key.startswith(k))),
            key=lambda k: (abs(len(k) - len(key)), k),
        )
        keys += prefixed[: n - len(keys)]
    return [by_key[k] for k in keys]


# --- member text: invisible and reordering characters ---------------------------------------------

# Controls that reorder how the text around them is displayed (bidi embeddings, overrides,
# isolates and marks): a prompt or description shown to others must read as it is stored.
_BIDI_CONTROLS = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_BLANK_LOOKING = frozenset("\u2800\u3164\u115f\u1160\uffa0")  # letters or symbols that draw nothing


def without_bidi_controls(text: str) -> str:
    """`text` without the characters that reorder its display (U+202E and friends)."""
    return _BIDI_CONTROLS.sub("", text)


def has_visible_text(text: str) -> bool:
    """Whether `text` shows anything: a letter, digit, punctuation or symbol that draws a glyph.
    Spaces, zero-width and format characters, variation selectors, combining marks on nothing and
    blank-looking letters (Hangul fillers, the Braille blank) do not count."""
    for ch in text:
        if unicodedata.category(ch)[0] in "LNPS" and ch not in _BLANK_LOOKING and not _IGNORABLE_RE.match(ch):
            return True
    return False


def clean_member_text(text: str) -> str:
    """Free text a member typed, as stored: bidi controls removed, surrounding space trimmed,
    and nothing at all when nothing in it is visible."""
    text = without_bidi_controls(text).strip()
    return text if has_visible_text(text) else ""


# --- captions (the local provider draws the prompt) -----------------------------------------------

_MARKDOWN_LINK = re.compile(r"\[([^\]\n]*)\]\((?:[^)\s]*)\)")
_MARKDOWN_MARKS = re.compile(r"\*\*|__|~~|\|\||`+")
_SPACES = re.compile(r"\s+")


def render_caption(text: str, tokens: Mapping[str, str], max_chars: int = 300) -> str:
    """`text` with mentions replaced by `tokens`, made safe to draw: markdown markers, control,
    format (bidi overrides, zero-width), private-use and unassigned characters removed, stacked
    marks capped, whitespace collapsed, cut to `max_chars` with an ellipsis."""
    text = replace_mentions(text, tokens)
    text = _MARKDOWN_MARKS.sub("", _MARKDOWN_LINK.sub(r"\1", text))
    out: list[str] = []
    stacked = 0
    for ch in text:
        cat = unicodedata.category(ch)
        if cat[0] == "Z" or ch in "\t\n\r\v\f":
            out.append(" ")
        elif cat[0] == "C" or _IGNORABLE_RE.match(ch):
            continue
        elif cat[0] == "M":
            stacked += 1
            if stacked <= 2:
                out.append(ch)
            continue
        else:
            out.append(ch)
        stacked = 0
    caption = _SPACES.sub(" ", "".join(out)).strip()
    if len(caption) > max_chars:
        caption = caption[: max_chars - 1].rstrip() + "…"
    return caption

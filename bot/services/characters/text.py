"""Small pure helpers for characters: share codes, echoing member-typed text safely, free names."""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Callable

from bot.prompts import NAME_MAX, InvalidName, name_skeleton, validate_character_name

# Crockford base32: no I, L, O, U, so a code read aloud or retyped is unambiguous.
CODE_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
CODE_LENGTH = 10  # 50 bits from `secrets`: unguessable, short enough to paste anywhere
_CODE_READS_AS = str.maketrans({"O": "0", "I": "1", "L": "1"})


def new_share_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def normalise_share_code(text: str) -> str | None:
    """The canonical code for what a member typed (case, spaces, dashes and look-alikes forgiven),
    or None when it cannot be a code."""
    code = "".join(ch for ch in text.upper() if ch not in " -_\t").translate(_CODE_READS_AS)
    if len(code) != CODE_LENGTH or any(ch not in CODE_ALPHABET for ch in code):
        return None
    return code


def shown(text: str, limit: int = 40) -> str:
    """Member-typed text made safe to echo inside `inline code`: no control or format characters
    (bidi overrides, zero-width spaces), no backticks to break out of the code span, bounded."""
    kept = []
    for ch in text:
        category = unicodedata.category(ch)
        if category[0] == "C" or category in ("Zl", "Zp"):
            continue
        kept.append("ˋ" if ch == "`" else (" " if category[0] == "Z" else ch))
    clean = " ".join("".join(kept).split())
    if len(clean) > limit:
        clean = clean[: limit - 1] + "…"
    return clean or "…"


def free_name(name: str, is_taken: Callable[[str], bool]) -> str | None:
    """A valid name close to `name` whose skeleton is not taken: name2, name3 ... then name_2 ..."""
    for n in range(2, 100):
        for sep in ("", "_"):
            suffix = f"{sep}{n}"
            candidate = name[: NAME_MAX - len(suffix)].rstrip("_") + suffix
            try:
                candidate = validate_character_name(candidate)
            except InvalidName:
                continue
            if not is_taken(name_skeleton(candidate)):
                return candidate
    return None

"""Character names, @mentions and prompt rendering (bot/prompts.py)."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bot.prompts import (
    AT_SIGNS,
    NAME_MAX,
    NAME_RE,
    InvalidName,
    NameProblem,
    close_matches,
    distinct_keys,
    find_mentions,
    name_key,
    render_caption,
    replace_mentions,
    validate_character_name,
)


def keys(text: str) -> list[str]:
    return [m.key for m in find_mentions(text)]


def is_valid(name: str) -> bool:
    try:
        validate_character_name(name)
    except InvalidName:
        return False
    return True


# --- examples -------------------------------------------------------------------------------------


def test_mentions_in_order_with_spans_and_unicode_names():
    text = "hi @Anna and @кот, @小明 and @राम!"
    found = find_mentions(text)
    assert [(m.key, m.written) for m in found] == [
        ("anna", "Anna"),
        ("кот", "кот"),
        ("小明", "小明"),
        ("राम", "राम"),  # combining vowel sign (Mc) stays inside the name
    ]
    assert [text[m.start : m.end] for m in found] == ["@Anna", "@кот", "@小明", "@राम"]


@pytest.mark.parametrize("text", ["a@b.com", "anna@anna.org", "x_@anna", "write to кот@почта.рф", "é@anna", "foo@@"])
def test_no_mention_after_a_word_character(text):
    assert find_mentions(text) == []


def test_the_whole_word_is_the_name():
    assert keys("@anna") == ["anna"]
    assert keys("@annabelle") == ["annabelle"]
    assert find_mentions("@anna", known=["ann", "anna"])[0].key == "anna"
    assert find_mentions("@ann dances", known=["anna"])[0].key == "ann"
    assert keys("@anna_b") == ["anna_b"]
    assert keys("@anna-b @anna.b @anna's") == ["anna", "anna", "anna"]


@pytest.mark.parametrize(
    "text",
    ["**@anna**", "*@anna*", "_@anna_", "__@anna__", "`@anna`", "||@anna||", "~~@anna~~", "[@anna](https://x.y)"],
)
def test_markdown_around_a_mention(text):
    found = find_mentions(text)
    assert [m.key for m in found][:1] == ["anna"]
    assert text[found[0].start : found[0].end] == "@anna"


@pytest.mark.parametrize("text", ["<@123>", "<@!123>", "<@&123>", "<@123456789012345678> hi"])
def test_discord_user_and_role_mentions_are_not_characters(text):
    assert find_mentions(text) == []
    assert find_mentions(text, known=["123"]) == []


def test_what_can_never_be_a_name_is_not_a_mention():
    long = "x" * (NAME_MAX + 1)
    assert keys(f"@everyone @HERE @2024 @a @__ @{long}") == []
    assert keys("@" + "x" * NAME_MAX) == ["x" * NAME_MAX]


def test_chained_mentions_and_stray_at_signs():
    assert keys("@anna@bob") == ["anna", "bob"]
    assert keys("@@anna") == ["anna"]
    assert keys("x@anna@bob") == []  # an address, not two mentions
    assert keys("@anna_@bob") == ["anna", "bob"]


def test_compatibility_forms_fold_together():
    assert keys("@ＡＮＮＡ ＠anna @𝐚𝐧𝐧𝐚 @Anna") == ["anna"] * 4
    assert name_key("Straße") == name_key("STRASSE")
    # look-alikes across scripts are different names (documented limitation)
    assert name_key("аnna") != name_key("anna")  # Cyrillic а


def test_distinct_keys_keeps_first_mention_order():
    assert distinct_keys(find_mentions("@bob @Anna @bob @anna @cy")) == ["bob", "anna", "cy"]


def test_replace_mentions():
    tokens = {"anna": "Anna", "BOB": "@bob.x1"}  # token keys are compared by name_key too
    assert replace_mentions("**@anna** meets @Bob and @cy, a@anna.com", tokens) == (
        "**Anna** meets @bob.x1 and @cy, a@anna.com"
    )
    assert replace_mentions("_@anna_", {"anna": "Anna"}) == "_Anna_"


def test_replace_mentions_never_glues_a_token_into_a_new_mention():
    assert replace_mentions("@@anna", {"anna": "Anna"}) == "@ Anna"
    # `@bo` + `b` would read as @bob
    out = replace_mentions("@bo@anna", {"anna": "b"})
    assert "bob" not in keys(out)
    assert keys(out) == ["bo"]


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("anna", "anna"),
        ("  @Кот ", "Кот"),
        ("ＡＮＮＡ", "ANNA"),
        ("小明", "小明"),
        ("anna_b2", "anna_b2"),
        ("2pac", "2pac"),
    ],
)
def test_valid_names_are_normalised(raw, normalised):
    assert validate_character_name(raw) == normalised
    assert NAME_RE.fullmatch(normalised)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", NameProblem.TOO_SHORT),
        ("a", NameProblem.TOO_SHORT),
        ("x" * 33, NameProblem.TOO_LONG),
        ("anna b", NameProblem.INVALID_CHARACTERS),
        ("an-na", NameProblem.INVALID_CHARACTERS),
        ("everyone", NameProblem.RESERVED),
        ("HeRe", NameProblem.RESERVED),
        ("123", NameProblem.NO_LETTER),
        ("_anna", NameProblem.EDGE_UNDERSCORE),
        ("anna_", NameProblem.EDGE_UNDERSCORE),
        ("\u0301anna", NameProblem.STARTS_WITH_MARK),
        ("a" + "\u0336" * 5 + "b", NameProblem.TOO_MANY_MARKS),
        ("\u3164\u3164", NameProblem.INVALID_CHARACTERS),  # Hangul filler: an invisible "letter"
    ],
)
def test_invalid_names_have_a_specific_reason(raw, reason):
    with pytest.raises(InvalidName) as info:
        validate_character_name(raw)
    assert info.value.reason_id == reason


def test_invisible_characters_are_named_by_code_point():
    with pytest.raises(InvalidName) as info:
        validate_character_name("an\u200bna\u202e")
    assert info.value.chars == ("\u200b", "\u202e")
    assert "U+200B ZERO WIDTH SPACE" in info.value.detail
    assert "U+202E RIGHT-TO-LEFT OVERRIDE" in info.value.detail
    assert "\u200b" not in info.value.detail and "\u202e" not in info.value.detail
    with pytest.raises(InvalidName) as info:
        validate_character_name("an-na")
    assert "'-' (U+002D HYPHEN-MINUS)" in info.value.detail


def test_close_matches():
    names = ["Anna", "Bob", "Annabelle", "Кот"]
    assert close_matches("@anan", names)[0] == "Anna"
    assert "Annabelle" in close_matches("annab", names)
    assert close_matches("кто", names) == ["Кот"]
    assert close_matches("zzzz", names) == []
    assert len(close_matches("ann", names, n=1)) == 1


def test_render_caption_is_safe_to_draw():
    text = "**@anna** \u202edances\u200b\n\twith @bob\x00 in `rain`" + "!" * 500
    caption = render_caption(text, {"anna": "Anna"}, max_chars=60)
    assert caption.startswith("Anna dances with @bob in rain!")
    assert len(caption) == 60 and caption.endswith("…")
    assert not any(unicodedata.category(ch)[0] == "C" for ch in caption)


# --- properties -----------------------------------------------------------------------------------

LETTERS = st.characters(categories=("Lu", "Ll", "Lo"), exclude_characters="\u3164\uffa0\u115f\u1160")
DIGITS = st.characters(min_codepoint=0x30, max_codepoint=0x39) | st.characters(min_codepoint=0x660, max_codepoint=0x669)
NAME_CHARS = st.one_of(LETTERS, DIGITS, st.just("_"))
NAMES = st.text(NAME_CHARS, min_size=2, max_size=NAME_MAX).filter(
    lambda n: is_valid(n) and unicodedata.normalize("NFKC", n) == n
)
PIECES = st.one_of(
    NAMES.map(lambda n: "@" + n),
    st.sampled_from(["@", "＠", "_", "__", "*", "**", "`", "||", " ", ".", "<", ">", "!", "&", "123", "a"]),
    st.text(max_size=4),
)
TEXTS = st.lists(PIECES, max_size=12).map("".join)


@given(
    prefix=st.text(max_size=10),
    local=st.text(st.one_of(LETTERS, DIGITS, st.sampled_from("._+-")), max_size=10),
    edge=st.one_of(LETTERS, DIGITS),
    domain=NAMES,
)
def test_emails_never_yield_mentions(prefix, local, edge, domain):
    email = f"{edge}{local}{edge}@{domain}.com"
    text = f"{prefix} {email} and more"
    start = len(prefix) + 1
    assert not [m for m in find_mentions(text) if start <= m.start < start + len(email)]


@given(short=NAMES, extra=st.text(NAME_CHARS, min_size=1, max_size=5))
def test_partial_names_never_match(short, extra):
    long = short + extra
    assume(is_valid(long) and name_key(long) != name_key(short))
    assert [m.key for m in find_mentions(f"@{long} waves", known=[short])] == [name_key(long)]
    assert [m.key for m in find_mentions(f"@{short} waves", known=[long])] == [name_key(short)]


@given(name=NAMES, wrap=st.sampled_from(["**", "*", "_", "__", "***", "`", "||", "~~", "> "]))
def test_markdown_wrappers_find_exactly_the_name(name, wrap):
    closing = "" if wrap == "> " else wrap
    found = find_mentions(f"say {wrap}@{name}{closing} now")
    assert [(m.key, m.written) for m in found] == [(name_key(name), name)]
    linked = find_mentions(f"[@{name}](https://example.com/x)")
    assert linked[0].written == name


@given(st.text())
def test_replace_mentions_is_identity_without_tokens(text):
    assert replace_mentions(text, {}) == text


TOKENS = (
    st.lists(st.sampled_from(["A", "b", "_", " ", "@", "＠", "*", ".", "-", "кот", "1"]), max_size=8)
    .map("".join)
    .filter(lambda t: not find_mentions(t))
)


@settings(max_examples=300)
@given(text=TEXTS, data=st.data())
def test_replacing_never_creates_mentions_of_replaced_names(text, data):
    found = distinct_keys(find_mentions(text))
    assume(found)
    chosen = data.draw(st.lists(st.sampled_from(found), min_size=1, unique=True))
    tokens = {key: data.draw(TOKENS) for key in chosen}
    out = replace_mentions(text, tokens)
    assert not set(keys(out)) & set(tokens)


@settings(max_examples=300)
@given(TEXTS)
def test_mentions_round_trip(text):
    found = find_mentions(text)
    ends = -1
    for m in found:
        assert text[m.start] in AT_SIGNS
        assert text[m.start + 1 : m.end] == m.written
        assert m.start >= ends
        ends = m.end
        assert is_valid(m.written)
    first: dict[str, str] = {}
    for m in found:
        first.setdefault(m.key, "@" + m.written)
    assert keys(replace_mentions(text, first)) == [m.key for m in found]


@given(
    before=st.text(max_size=8),
    kind=st.sampled_from(["", "!", "&"]),
    digits=st.text("0123456789", min_size=1, max_size=20),
    after=st.text(max_size=8),
)
def test_discord_mention_syntax_never_matches(before, kind, digits, after):
    text = f"{before}<@{kind}{digits}>{after}"
    at = len(before) + 1
    assert all(m.start != at for m in find_mentions(text, known=[digits, "a" + digits]))


@given(st.text())
def test_any_text_parses_and_captions(text):
    for m in find_mentions(text):
        assert is_valid(m.written)
    caption = render_caption(text, {"anna": "Anna"}, max_chars=80)
    assert len(caption) <= 80
    assert not any(unicodedata.category(ch)[0] == "C" for ch in caption)

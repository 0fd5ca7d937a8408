"""The shared command grammar: every key and alias, range edges, and no input that crashes it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bot.grammar import (
    CHAT_RANGES,
    KEYS,
    RANGES,
    Compose,
    Page,
    SettingsCommand,
    ShareCommand,
    Simple,
    TrackCommand,
    UsageError,
    instrument_of,
    parse,
    similar_instruments,
)


def test_compose_with_keys_and_every_alias():
    full = parse(
        "/compose@melomania_bot ambient temp=1.1 len=1m30s seed=7 topk=30 topp=0.9 k=3 rp=0.1 rps=1 inst=vibes"
    )
    assert full == Compose(
        genre="calm",
        seconds=90.0,
        seed=7,
        instrument="vibraphone",
        sampling={
            "temperature": 1.1,
            "top_k": 30,
            "top_p": 0.9,
            "at_least_k": 3,
            "rp_penalty": 0.1,
            "rp_restore_speed": 1.0,
        },
    )
    for alias, name in KEYS.items():
        if name in ("genre", "instrument", "density", "loudness", "polyphony", "count", "arrangement"):
            continue
        value = {"seconds": "60", "seed": "5"}.get(name, RANGES[name].example)
        got = parse(f"/compose jazz {alias}={value}")
        assert getattr(got, name, None) == RANGES[name].check(alias, value) or got.sampling[name] == RANGES[name].check(
            alias, value
        )


def test_band_and_solo_are_words_and_a_key_of_compose():
    assert parse("/compose jazz band 60s") == Compose(genre="jazz", seconds=60.0, arrangement="band")
    assert parse("/compose ambient sparse Solo") == Compose(genre="calm", sampling={"density": 1}, arrangement="solo")
    assert parse("/compose band") == Compose(arrangement="band")  # the user's default genre
    assert parse("/compose pop arrangement=band").arrangement == parse("/compose pop arr=BAND").arrangement == "band"
    assert parse("/compose jazz").arrangement is None  # the genre's own
    with pytest.raises(
        UsageError, match=r"the arrangement is solo or band, not 'trio' \(for example /compose jazz band\)"
    ):
        parse("/compose jazz arrangement=trio")
    with pytest.raises(UsageError, match="arrangement needs a value, like arrangement=band"):
        parse("/compose jazz arrangement=")
    with pytest.raises(UsageError, match="I can't read 'solo'"):
        parse("/compose jazz band solo")


def test_control_words_and_keys_set_the_attribute_controls():
    assert parse("/compose ambient sparse very soft 60s") == Compose(
        genre="calm", seconds=60.0, sampling={"density": 1, "loudness": 0}
    )
    assert parse("/compose jazz density=busy polyphony=thin loudness=3").sampling == {
        "density": 3,
        "polyphony": 1,
        "loudness": 3,
    }
    with pytest.raises(UsageError, match="very low, low, medium, high, very high"):
        parse("/compose jazz density=loads")
    with pytest.raises(UsageError, match="sparse soft"):
        parse("/compose ambient sparkly")


def test_positional_shorthand_and_genre_aliases():
    assert parse("/compose jazz 0.9 60s") == Compose(genre="jazz", seconds=60.0, sampling={"temperature": 0.9})
    assert parse("/compose Classical 2m") == Compose(genre="classic", seconds=120.0)
    assert parse("/compose AMBIENT 1:30") == Compose(genre="calm", seconds=90.0)
    assert parse("/compose") == Compose()
    assert parse("/compose genre=pop") == Compose(genre="pop")


@pytest.mark.parametrize("name", [*sorted(RANGES), "count"])
def test_range_edges_are_inclusive_and_one_step_outside_is_refused(name):
    r = RANGES.get(name) or CHAT_RANGES[name]
    key = next(k for k, v in KEYS.items() if v == name)
    for ok in (r.low, r.high):
        parse(f"/compose jazz {key}={int(ok) if r.whole else ok}")
    step = 1 if r.whole else 0.01
    for bad in (r.low - step, r.high + step):
        with pytest.raises(UsageError, match=rf"must be {r.bounds}.*for example"):
            parse(f"/compose jazz {key}={int(bad) if r.whole else round(bad, 4)}")


def test_count_asks_for_several_candidates_from_one_to_four():
    assert parse("/compose jazz count=3 len=5") == Compose(genre="jazz", seconds=5.0, count=3)
    assert parse("/compose jazz").count == 1  # one track, as always
    for bad in ("0", "5"):
        with pytest.raises(UsageError, match=r"count must be from 1 to 4, not \d \(for example count=3\)"):
            parse(f"/compose jazz count={bad}")
    with pytest.raises(UsageError, match="count must be a whole number from 1 to 4"):
        parse("/compose jazz count=two")
    with pytest.raises(UsageError, match="count needs a value, like count=3"):
        parse("/compose jazz count=")
    with pytest.raises(UsageError, match="I don't know the option 'count'"):
        parse("/settings count=3")  # a default of several would surprise: it is asked for each time


def test_other_commands():
    assert parse("/history") == Page("history", 1)
    assert parse("/favourites 3") == Page("favorites", 3)
    assert parse("/continue #42") == TrackCommand("continue", 42)
    assert parse("/continue") == TrackCommand("continue", None)
    assert parse("/share 42 @mychannel") == ShareCommand(42, "@mychannel")
    assert parse("/share 7 -1001234567") == ShareCommand(7, "-1001234567")
    assert parse("/settings genre=ambient temp=1.0 inst=strings len=45") == SettingsCommand(
        {"genre": "calm", "temperature": 1.0, "instrument": "strings", "seconds": 45.0}
    )
    assert parse("/settings") == SettingsCommand({})
    for name in ("start", "help", "genres", "cancel", "forgetme"):
        assert parse(f"/{name}") == Simple(name)


@pytest.mark.parametrize(
    "text",
    [
        '/compose jazz inst="electric piano" 0.9',
        "/compose jazz inst=“electric piano” 0.9",  # a phone's curly quotes
        "/compose jazz inst=electric_piano 0.9",
        "/compose jazz inst=electric-piano 0.9",
        "/compose jazz inst=electric+piano 0.9",
        "/compose jazz inst=rhodes 0.9",
        '/compose jazz "inst=Electric  Piano" 0.9',
    ],
)
def test_an_instrument_of_several_words_can_be_typed(text):
    assert parse(text) == Compose(genre="jazz", instrument="electric piano", sampling={"temperature": 0.9})


def test_settings_take_a_quoted_instrument():
    assert parse('/settings inst="music box" genre=jazz') == SettingsCommand(
        {"instrument": "music box", "genre": "jazz"}
    )


@pytest.mark.parametrize(
    "typed, suggested",
    [
        ("electirc piano", "did you mean: electric piano?"),
        ("electric", "did you mean: electric piano?"),
        ("guitr", "did you mean: guitar or jazz guitar?"),
        ("rhodez", "did you mean: electric piano?"),  # close to an alias: its instrument
    ],
)
def test_an_unknown_instrument_suggests_close_names(typed, suggested):
    with pytest.raises(UsageError, match=re.escape(suggested)):
        parse(f'/compose jazz inst="{typed}"')
    with pytest.raises(UsageError, match=re.escape(suggested)):
        instrument_of(typed)
    assert similar_instruments(typed)[0] == suggested.split(": ")[1].split(" or ")[0].rstrip("?")


def test_an_unknown_instrument_with_nothing_close_lists_them_all():
    with pytest.raises(UsageError) as caught:
        instrument_of("kazoo")
    assert "did you mean" not in str(caught.value) and "choose one of: piano, bright piano" in str(caught.value)


def test_an_unclosed_quote_is_a_plain_character():
    with pytest.raises(UsageError, match="inst needs a value"):
        parse('/compose jazz inst="electric piano')


@pytest.mark.parametrize(
    "text, message",
    [
        ("/compose polka", "choose one of: classic, jazz, ambient, pop"),
        ("/compose jazz temp=abc", "temp must be a number from 0.1 to 2"),
        ("/compose jazz len=999999", "len must be from 5 to 180"),
        ("/compose jazz seed=1.5", "seed must be a whole number"),
        ("/compose jazz foo=1", "I don't know the option 'foo'"),
        ("/compose jazz temp=", "temp needs a value"),
        ("/compose jazz inst=kazoo", "I don't know the instrument 'kazoo'"),
        ("/compose jazz banana", "I can't read 'banana'"),
        ("/share 42", "/share needs a track and a channel"),
        ("/share abc @x", "is not a track number"),
        ("/continue 4 2", "/continue takes a track number"),
        ("/history 0", "page must be from 1 to 1000"),
        ("/settings seed=4", "I don't know the option 'seed'"),
        ("/help me", "takes nothing after it"),
        ("hello", "try /compose ambient"),
        ("", "send a command"),
        ("/compose " + "x" * 4000, "too long for a command"),
    ],
)
def test_bad_input_gets_a_message_naming_what_to_type(text, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse(text)


words = st.one_of(
    st.sampled_from(
        [
            "/compose",
            "/history",
            "/share",
            "/continue",
            "/settings",
            "/help",
            "jazz",
            "ambient",
            "pop",
            "polka",
            "temp=",
            "temp=0.9",
            "len=60",
            "60s",
            "1m",
            "0.9",
            "#42",
            "@chan",
            "k=3",
            "seed=",
            "=",
            "==",
            "rp=1e9",
            "topk=-1",
            "inst=vibes",
            'inst="electric',
            'piano"',
            '"',
            "“",
            "”",
            "nan",
            "inf",
            "1:99",
            "\u00a0",
            "🔥",
        ]
    ),
    st.text(max_size=12),
)


@pytest.mark.parametrize("length", ["9" * 400 + ":00", "len=" + "9" * 400 + ":00", "len=" + "9" * 330 + "m"])
def test_a_length_too_long_to_count_is_refused_with_the_range(length):
    with pytest.raises(UsageError, match=RANGES["seconds"].bounds):
        parse(f"/compose jazz {length}")


@settings(max_examples=10_000, deadline=None)
@given(st.lists(words, max_size=8).map(" ".join))
def test_no_input_crashes_the_parser(text):
    try:
        parse(text)
    except UsageError as exc:
        assert str(exc)


def test_the_grammar_does_not_import_torch():
    code = "import sys, bot.grammar; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)

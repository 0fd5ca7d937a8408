"""The chat command grammar, shared by every platform: text in, a typed request out.

    /compose jazz temp=0.9 len=60 seed=7      keys and aliases
    /compose jazz 0.9 60s                     positional shorthand: a temperature, a length
    /compose ambient sparse very soft thick   attribute controls (density, loudness, polyphony)
    /compose jazz count=3                     several candidates to pick one from
    /compose jazz band 60s   /compose pop solo  the genre's band around the piano, or the piano alone
    /history 2   /continue 42   /share 42 @mychannel   /settings genre=ambient temp=1.0

`parse` is a pure function: it returns a request or raises UsageError, whose message names the
valid range and gives an example (in English as str(), in the user's language with `said`). It
never raises anything else, whatever the input. Command words, keys, genre and instrument names
stay English in every language: they are what people type.
"""

from __future__ import annotations

import difflib
import functools
import re
from dataclasses import dataclass, field
from typing import Any

from bot.i18n import N_, Phrase, PhraseError
from generator.arrangements import ARRANGEMENTS
from generator.controls import ATTRIBUTES as CONTROLS
from generator.controls import ControlError, parse_level, word_controls
from generator.instruments import ALIASES as INSTRUMENT_ALIASES
from generator.instruments import INSTRUMENTS
from generator.params import RANGES, Range, RangeError
from generator.vocab import GENRE_ALIASES, GENRES, display_name

MAX_TEXT = 1000  # longer messages are not commands anyone typed
NAME = re.compile(r"^/?([a-z_]+)(?:@\w+)?$")  # /compose or /compose@melomania_bot


class UsageError(PhraseError, ValueError):
    """The user typed something we cannot do; the message says what to type instead."""


def bounds(r: Range) -> Phrase:
    """'from 5 to 180', in the reader's language."""
    low, high = r.ends
    return Phrase(N_("from {low} to {high}"), {"low": low, "high": high})


def checked(r: Range, name: str, raw: str | float | int) -> float | int:
    """`raw` in the range `r` (generator.params.RANGES, the one place a person's generator ranges
    live, or CHAT_RANGES for the chat's own), or UsageError."""
    try:
        return r.check(name, raw)
    except RangeError as exc:
        if exc.number:
            message = N_("{name} must be {bounds}, not {shown} (for example {name}={example})")
        elif r.whole:
            message = N_("{name} must be a whole number {bounds}, not {shown} (for example {name}={example})")
        else:
            message = N_("{name} must be a number {bounds}, not {shown} (for example {name}={example})")
        raise UsageError(message, name=name, bounds=bounds(r), shown=exc.shown, example=r.example) from None


def range_of(name: str) -> Range | None:
    """The range a person's value of `name` keeps to: the generator's (RANGES) or the chat's own."""
    return RANGES.get(name) or CHAT_RANGES.get(name)


KEYS: dict[str, str] = {
    "temperature": "temperature",
    "temp": "temperature",
    "t": "temperature",
    "seconds": "seconds",
    "len": "seconds",
    "length": "seconds",
    "sec": "seconds",
    "seed": "seed",
    "top_k": "top_k",
    "topk": "top_k",
    "top_p": "top_p",
    "topp": "top_p",
    "k": "at_least_k",
    "at_least_k": "at_least_k",
    "rp": "rp_penalty",
    "rp_penalty": "rp_penalty",
    "rps": "rp_restore_speed",
    "rp_restore_speed": "rp_restore_speed",
    "instrument": "instrument",
    "inst": "instrument",
    "genre": "genre",
    "density": "density",
    "loudness": "loudness",
    "polyphony": "polyphony",
    "count": "count",
    "arrangement": "arrangement",
    "arr": "arrangement",
}
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "at_least_k", "rp_penalty", "rp_restore_speed", *CONTROLS)
SETTINGS_KEYS = ("genre", "temperature", "instrument", "seconds")
GENRE_NAMES = ", ".join(display_name(g) for g in GENRES)


@dataclass(frozen=True)
class Compose:
    genre: str | None = None  # None: the user's default
    seconds: float | None = None
    seed: int | None = None
    instrument: str | None = None
    sampling: dict[str, Any] = field(default_factory=dict)
    count: int = 1  # candidates composed at once, the user keeps one (CHAT_RANGES["count"])
    arrangement: str | None = None  # solo or band; None: the genre's own (generator.arrangements)


@dataclass(frozen=True)
class Page:
    command: str  # history, favorites
    page: int = 1


@dataclass(frozen=True)
class TrackCommand:
    command: str  # continue
    track_id: int | None = None  # None: reply-to a MIDI file


@dataclass(frozen=True)
class ShareCommand:
    track_id: int
    channel: str


@dataclass(frozen=True)
class SettingsCommand:
    values: dict[str, Any] = field(default_factory=dict)  # empty: show the settings


@dataclass(frozen=True)
class Simple:
    command: str  # start, help, genres, cancel, forgetme


Request = Compose | Page | TrackCommand | ShareCommand | SettingsCommand | Simple
SIMPLE = ("start", "help", "genres", "cancel", "forgetme")
COMMANDS = ("compose", "history", "favorites", "continue", "share", "settings", *SIMPLE)
ALIASES = {"favourites": "favorites", "favs": "favorites", "c": "compose", "forget_me": "forgetme"}
SHARE_USAGE = N_("/share needs a track and a channel, like /share 42 @mychannel")


def genre_of(word: str) -> str:
    key = word.strip().lower()
    key = GENRE_ALIASES.get(key, key)
    if key not in GENRES:
        raise UsageError(
            N_("I don't know the genre {word!r}; choose one of: {genres} (for example /compose ambient)"),
            word=word[:30],
            genres=GENRE_NAMES,
        )
    return key


def _is_genre(word: str) -> bool:
    key = word.strip().lower()
    return GENRE_ALIASES.get(key, key) in GENRES


def instrument_of(word: str) -> str:
    """An instrument's name, however typed: "electric piano", electric_piano, electric-piano, an
    alias (rhodes); a miss suggests the close names (a typo, a word left out)."""
    key = " ".join(word.strip().lower().replace("_", " ").replace("-", " ").split())
    key = INSTRUMENT_ALIASES.get(key, key)
    if key not in INSTRUMENTS:
        close, names = similar_instruments(key), ", ".join(INSTRUMENTS)
        if close:
            raise UsageError(
                N_("I don't know the instrument {word!r}; did you mean: {close}? Or choose one of: {names}"),
                word=word[:30],
                close=either(close),
                names=names,
            )
        raise UsageError(
            N_("I don't know the instrument {word!r}; choose one of: {names}"), word=word[:30], names=names
        )
    return key


def arrangement_of(word: str) -> str:
    """solo or band, however cased; anything else is a usage error naming both."""
    key = word.strip().lower()
    if key not in ARRANGEMENTS:
        raise UsageError(
            N_("the arrangement is {names}, not {word!r} (for example /compose jazz band)"),
            names=either(list(ARRANGEMENTS)),
            word=word[:30],
        )
    return key


def either(names: list[str]) -> Phrase | str:
    """'a or b or c', in the reader's language."""
    return functools.reduce(
        lambda first, second: Phrase(N_("{first} or {second}"), {"first": first, "second": second}), names
    )


def similar_instruments(name: str, most: int = 3) -> list[str]:
    """Instrument names close to `name` (difflib), best first; aliases count as their instrument.
    A name of one word also matches the instruments it is a word of ("electric" → electric piano)."""
    key = " ".join(name.strip().lower().replace("_", " ").replace("-", " ").split())[:40]
    names = {n: n for n in INSTRUMENTS} | dict(INSTRUMENT_ALIASES)
    found: list[str] = []
    for hit in difflib.get_close_matches(key, names, n=most * 2, cutoff=0.6):
        if names[hit] not in found:
            found.append(names[hit])
    if key and not found:
        found = [n for n in INSTRUMENTS if key in n.split()]
    return found[:most]


QUOTED_WORD = re.compile(r'(?:"[^"]*"|“[^”"]*[”"]|[^\s"“])+|\S+')  # a lone quote is a plain character
QUOTES = str.maketrans("", "", '"“”')


def words_of(text: str) -> list[str]:
    """The message's words, a quoted part kept whole: inst="electric piano" is one word,
    inst=electric piano (the quotes gone). Typed on a phone, the quotes may be “curly”."""
    found = (w.translate(QUOTES) for w in QUOTED_WORD.findall(text))
    return [w for w in found if w.strip()]


def seconds_of(raw: str) -> float:
    """'60', '60s', '1m', '1m30s', '1:30' → seconds, within the chat range."""
    text = raw.strip().lower()
    m = re.fullmatch(r"(?:(\d+(?:\.\d+)?)m)?(?:(\d+(?:\.\d+)?)s?)?", text) or re.fullmatch(r"(\d+):(\d{1,2})", text)
    if m and any(m.groups()) and ":" not in text:
        total = float(m.group(1) or 0) * 60 + float(m.group(2) or 0)
    elif m and ":" in text:  # as floats: a minute count hundreds of digits long becomes inf, not an OverflowError
        total = float(m.group(1)) * 60 + float(m.group(2))
    else:
        return float(checked(RANGES["seconds"], "len", raw))
    return float(checked(RANGES["seconds"], "len", f"{total:g}"))


def _key_values(words: list[str], allowed: tuple[str, ...] | None = None) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for word in words:
        key, _, raw = word.partition("=")
        name = KEYS.get(key.lower())
        if name is None or (allowed is not None and name not in allowed):
            keys = ", ".join(sorted({k for k, v in KEYS.items() if allowed is None or v in allowed}))
            raise UsageError(N_("I don't know the option {key!r}; use one of: {keys}"), key=key[:20], keys=keys)
        limits = range_of(name)
        if not raw:
            example = limits.example if limits else ("band" if name == "arrangement" else "jazz")
            raise UsageError(N_("{key} needs a value, like {key}={example}"), key=key, example=example)
        if name == "genre":
            values[name] = genre_of(raw)
        elif name == "instrument":
            values[name] = instrument_of(raw.replace("+", " "))
        elif name == "seconds":
            values[name] = seconds_of(raw)
        elif name == "arrangement":
            values[name] = arrangement_of(raw)
        elif name in CONTROLS:
            try:
                values[name] = parse_level(name, raw)
            except ControlError as exc:
                raise UsageError(N_("{reason} (for example {key}=low)"), reason=str(exc), key=key) from None
        else:
            values[name] = checked(limits, key, raw)
    return values


def _compose(args: list[str]) -> Compose:
    genre = None
    if args and "=" not in args[0] and not re.fullmatch(r"[\d.:ms]+", args[0].lower()):
        if args[0].lower() in ARRANGEMENTS:
            pass  # "/compose band": the user's default genre, with its band
        elif word_controls(args[:2])[1] != args[:2] and not _is_genre(args[0]):
            pass  # "/compose sparse soft": controls, the user's default genre
        else:
            genre, args = genre_of(args[0]), args[1:]
    # Words like "sparse", "very soft", "thick" set the attribute controls.
    controls, positional = word_controls([a for a in args if "=" not in a])
    values = {**controls.as_dict(), **_key_values([a for a in args if "=" in a])}
    for word in positional:  # shorthand: a temperature (has a dot, under 3), a length (60s, 1m, 90), band/solo
        if word.lower() in ARRANGEMENTS and "arrangement" not in values:
            values["arrangement"] = word.lower()
        elif re.fullmatch(r"\d*\.\d+", word) and "temperature" not in values:
            values["temperature"] = checked(RANGES["temperature"], "temp", word)
        elif re.fullmatch(r"[\d.:ms]+", word.lower()) and "seconds" not in values:
            values["seconds"] = seconds_of(word)
        else:
            raise UsageError(
                N_(
                    "I can't read {word!r}; try /compose jazz 0.9 60s, /compose ambient sparse soft,"
                    " /compose jazz band or /compose jazz temp=0.9 len=60"
                ),
                word=word[:30],
            )
    if "genre" in values:
        genre = values.pop("genre")
    return Compose(
        genre=genre,
        seconds=values.pop("seconds", None),
        seed=values.pop("seed", None),
        instrument=values.pop("instrument", None),
        sampling={k: values[k] for k in SAMPLING_KEYS if k in values},
        count=int(values.pop("count", 1)),
        arrangement=values.pop("arrangement", None),
    )


def _track_id(raw: str, command: str) -> int:
    m = re.fullmatch(r"#?(\d{1,12})", raw)
    if not m:
        raise UsageError(
            N_("{word!r} is not a track number; for example /{command} 42"), word=raw[:30], command=command
        )
    return int(m.group(1))


def parse(text: str) -> Request:
    """A chat message → a request, or UsageError with what to type instead."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError(N_("send a command, like /compose ambient (or /help)"))
    if len(text) > MAX_TEXT:
        raise UsageError(
            N_("that message is too long for a command ({length} characters; at most {most})"),
            length=len(text),
            most=MAX_TEXT,
        )
    words = words_of(text) or text.split()
    m = NAME.match(words[0].lower())
    name = ALIASES.get(m.group(1), m.group(1)) if m else None
    if name not in COMMANDS:
        raise UsageError(N_("I don't know {word!r}; try /compose ambient, /genres or /help"), word=words[0][:30])
    args = words[1:]
    if name == "compose":
        return _compose(args)
    if name in ("history", "favorites"):
        if len(args) > 1:
            raise UsageError(N_("/{command} takes a page number, like /{command} 2"), command=name)
        page = checked(CHAT_RANGES["page"], "page", args[0]) if args else 1
        return Page(name, int(page))
    if name == "continue":
        if len(args) > 1:
            raise UsageError(N_("/continue takes a track number, like /continue 42 (or reply to a MIDI file)"))
        return TrackCommand("continue", _track_id(args[0], "continue") if args else None)
    if name == "share":
        if len(args) != 2:
            raise UsageError(SHARE_USAGE)
        track_id, channel = _track_id(args[0], "share"), args[1]
        if not re.fullmatch(r"@\w{3,64}|-?\d{1,20}|<#\d{1,20}>", channel):
            raise UsageError(N_("{word!r} is not a channel; use @channelname or the chat id"), word=channel[:30])
        return ShareCommand(track_id, channel)
    if name == "settings":
        return SettingsCommand(_key_values(args, SETTINGS_KEYS))
    if args:
        raise UsageError(N_("/{command} takes nothing after it"), command=name)
    return Simple(name)


# The chat's own ranges, which the generator knows nothing of (read like RANGES, with `checked`).
CHAT_RANGES: dict[str, Range] = {
    "page": Range(1, 1000, whole=True, example="2"),
    # 1 is the usual single track; 2-4 come together, like an image bot's grid, to pick one from
    "count": Range(1, 4, whole=True, example="3"),
}

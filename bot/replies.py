"""What the bot says, built once for every platform: captions, progress lines and buttons.

Adapters (Telegram, Discord) only translate a `Reply` into their own message and keyboard types.
Button data is short text, `<action>:<track id>`, so a button keeps working after a restart.
Every text is in the reader's language: the functions take their translations `t` (English by
default; see `bot.i18n` for how to add a string).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from bot.grammar import RANGES
from bot.i18n import ENGLISH, N_, Translations
from generator.vocab import PIANO_RANGE, display_name

ACTIONS = {  # translated where they are shown: t.gettext(ACTIONS[action])
    "reroll": N_("🔁 Reroll"),
    "hotter": N_("🔥 Hotter"),
    "cooler": N_("❄️ Cooler"),
    "fav": N_("⭐ Favourite"),
    "unfav": N_("★ Favourited"),
    "continue": N_("➕ Continue"),
    "share": N_("📤 Share"),
}
# How a child track names its parent in its caption; another lineage reads "<lineage> of #41".
LINEAGES = {
    "reroll": N_("reroll of #{parent}"),
    "hotter": N_("hotter of #{parent}"),
    "cooler": N_("cooler of #{parent}"),
    "continue": N_("continue of #{parent}"),
    "arrangement": N_("rearranged from #{parent}"),
}
# The genres' names as shown (looked up by their English, `genre_label`); a genre's typed name
# stays English in every language.
GENRE_LABELS = (N_("Classic"), N_("Jazz"), N_("Ambient"), N_("Pop"))
TEMPERATURE_STEP = 0.1
# 🎹 under a track: the instruments it may be heard on again (its notes as they are, rendered anew)
RERENDER_INSTRUMENTS = ("piano", "electric piano", "organ", "vibraphone", "guitar", "harp", "strings", "pad")
BUTTON = re.compile(r"^(reroll|hotter|cooler|fav|unfav|continue|share):(\d{1,12})$")
# 🎸 under a track: the same notes in the other arrangement; the label names what a press makes.
ARRANGE = re.compile(r"^arr:(\d{1,12}):(solo|band)$")
ARRANGE_LABELS = {"band": N_("🎸 Add the band"), "solo": N_("🎼 Piano alone")}


@dataclass(frozen=True)
class Button:
    label: str
    data: str  # action:track_id


@dataclass(frozen=True)
class TrackCard:
    """A stored track as a chat shows it; the keys are the artifact store's, read through the service."""

    track_id: int
    genre: str
    title: str  # Ambient #42
    stem: str  # ambient-42, for file names
    caption: str
    duration_s: float
    file_id: str | None = None  # this platform's copy of the audio, when it was uploaded before
    mp3_key: str | None = None
    midi_key: str | None = None
    png_key: str | None = None
    arrangement: str = "solo"  # or band (generator.arrangements): what the 🎸 toggle offers is the other

    def buttons(self, favourite: bool = False, t: Translations = ENGLISH) -> list[list[Button]]:
        return track_buttons(self.track_id, favourite, t)


# What a reply is, so each platform can mark it its own way (🤔, 🙅, ⏳ …); "" is a plain answer.
USAGE = "usage"  # the user typed or picked something we cannot do, or a track they may not see
REFUSED = "refused"  # the job backend said no (busy, quota)
LIMITED = "limited"  # over a rate limit
UNREADABLE = "unreadable"  # a file they sent cannot be used
# What is wrong with a MIDI file someone sent, by `generator.tokenizer.MIDI_FAULTS`' keys
MIDI_FAULTS = {
    "not_midi": N_("that is not a MIDI file: it does not start with the MIDI header, MThd"),
    "cut_header": N_("that MIDI file is cut short: it ends inside its header"),
    "cut_track": N_("that MIDI file is cut short: it ends inside a track (cut off while copying, perhaps)"),
    "no_track_header": N_("that MIDI file is damaged: a track does not start with its MTrk header"),
    "bad_event": N_("that MIDI file is damaged: a track holds an event that is not valid MIDI"),
    "no_timing": N_("that MIDI file is damaged: its header gives no timing (a division of 0)"),
    "no_notes": N_("that MIDI file has no notes I can continue (I use the piano's notes {lo}–{hi})"),
}
MIDI_DAMAGED = N_("that MIDI file is damaged and cannot be read")  # what the parser said, none of the above


def midi_fault_text(refusal: Exception, t: Translations = ENGLISH) -> str:
    """Why a MIDI file cannot be continued, in the reader's language: its `fault` (a MIDI_FAULTS
    key) if it has one, else the refusal's own words (its size, say), else that it is damaged."""
    fault = getattr(refusal, "fault", None)
    if fault in MIDI_FAULTS:
        lo, hi = PIANO_RANGE
        return t.gettext(MIDI_FAULTS[fault]).format(lo=lo, hi=hi)
    return str(refusal) if fault is None and str(refusal) else t.gettext(MIDI_DAMAGED)


@dataclass(frozen=True)
class Reply:
    text: str
    buttons: list[list[Button]] = field(default_factory=list)
    ephemeral: bool = False  # only the asking user sees it (Discord), or a private answer
    kind: str = ""
    track: TrackCard | None = None

    @property
    def silent(self) -> bool:
        """Nothing to say: the same update or interaction came again, and the first is answered."""
        return not self.text


SILENT = Reply("")


@dataclass(frozen=True)
class Started:
    """Jobs were accepted; the platform now shows their progress and delivers them: one track, or
    a group of candidates (/compose count=3) shown together for the user to keep one."""

    job_ids: tuple[int, ...]

    @property
    def job_id(self) -> int:
        return self.job_ids[0]

    @property
    def candidates(self) -> bool:
        return len(self.job_ids) > 1


@dataclass(frozen=True)
class Listing:
    """A numbered page of the user's history or favourites: one line a track."""

    kind: str  # history, favorites
    page_no: int
    lines: list[str]
    more: bool = False


def listing_text(
    listing: Listing,
    empty: dict[str, str],
    code=lambda c: c,
    page_arg: str = "",
    footer: str | None = None,
    t: Translations = ENGLISH,
) -> str:
    """The page as a message; `code` marks a command the way the platform writes one and
    `page_arg` names the page option (Discord's `page:`). `empty` and `footer` are msgids."""
    kind, n = listing.kind, listing.page_no
    if not listing.lines:
        return (
            t.gettext("There is no page {n}; try {command}").format(n=n, command=code(f"/{kind}"))
            if n > 1
            else t.gettext(empty[kind])
        )
    title = t.gettext("Your tracks (page {n}):") if kind == "history" else t.gettext("Your favourites (page {n}):")
    lines = [title.format(n=n), *listing.lines]
    if listing.more:
        lines.append(t.gettext("More: {command}").format(command=code(f"/{kind} {page_arg}{n + 1}")))
    if footer:
        lines.append(t.gettext(footer))
    return "\n".join(lines)


EXPIRED = N_("the audio of track #{track_id} has expired; /compose a new one")


def genre_label(genre: str, t: Translations = ENGLISH) -> str:
    """A genre's name as shown ('Ambient'), in the reader's language."""
    return t.gettext(display_name(genre).capitalize())


def event_line(
    kind: str,
    done: int,
    total: int,
    eta_s: float | None,
    position: int | None,
    reason: str | None,
    t: Translations = ENGLISH,
) -> str:
    """A job event's progress line, with the reason of a failure."""
    text = progress_line(kind, done, total, eta_s, position, t)
    if kind in ("failed", "cancelled") and reason and reason != "cancelled":
        text = f"{text}: {reason}"
    return text


@dataclass(frozen=True)
class ButtonPress:
    action: str
    track_id: int


def arrangement_button(track_id: int, arrangement: str, t: Translations = ENGLISH) -> Button:
    """🎸 under a track in `arrangement`: its notes again in the other one (data arr:<id>:<other>)."""
    other = "solo" if arrangement == "band" else "band"
    return Button(t.gettext(ARRANGE_LABELS[other]), f"arr:{track_id}:{other}")


@dataclass(frozen=True)
class ArrangePress:
    track_id: int
    arrangement: str  # the one asked for


def parse_arrangement(data: str) -> ArrangePress | None:
    """🎸's data back; None for anything we did not make."""
    m = ARRANGE.match(data or "")
    return ArrangePress(int(m.group(1)), m.group(2)) if m else None


def parse_button(data: str) -> ButtonPress | None:
    """Button data back into an action; None for anything we did not make (stale or forged)."""
    m = BUTTON.match(data or "")
    return ButtonPress(m.group(1), int(m.group(2))) if m else None


def caption(
    track_id: int,
    genre: str,
    seconds: float,
    seed: int,
    sampling: dict[str, Any],
    instrument: str,
    parent_id: int | None = None,
    lineage: str | None = None,
    t: Translations = ENGLISH,
    arrangement: str = "solo",
) -> str:
    """'Ambient #42 · 0:31 · piano' (· piano and band, with its band) then the recipe, short enough
    for any platform's caption. The recipe's keys stay as they are typed (seed=, temp=) in every
    language."""
    m, s = divmod(round(seconds), 60)
    played = t.gettext("{instrument} and band").format(instrument=instrument) if arrangement == "band" else instrument
    lines = [f"{genre_label(genre, t)} #{track_id} · {m}:{s:02d} · {played}"]
    recipe = [f"seed {seed}", f"temp {sampling.get('temperature', 1.0):g}"]
    for key, label in (("top_k", "top-k"), ("top_p", "top-p"), ("at_least_k", "k"), ("rp_penalty", "rp")):
        if key in sampling:
            recipe.append(f"{label} {sampling[key]:g}")
    lines.append(" · ".join(recipe))
    if parent_id is not None:
        known = LINEAGES.get(lineage or "")
        if known:
            lines.append(t.gettext(known).format(parent=parent_id))
        else:
            lines.append(t.gettext("{lineage} of #{parent}").format(lineage=lineage or "from", parent=parent_id))
    return "\n".join(lines)


FORGET_CONFIRM = N_(
    "🗑 Delete your settings, favourites and every track you composed, for good? "
    "(Tracks already posted in channels stay there.)"
)
FORGET_DELETE, FORGET_KEEP, FORGET_KEPT = N_("🗑 Delete everything"), N_("Keep it"), N_("👍 Kept everything.")


def track_buttons(track_id: int, favourite: bool = False, t: Translations = ENGLISH) -> list[list[Button]]:
    row1 = [Button(t.gettext(ACTIONS[a]), f"{a}:{track_id}") for a in ("reroll", "hotter", "cooler")]
    fav = "unfav" if favourite else "fav"
    row2 = [Button(t.gettext(ACTIONS[a]), f"{a}:{track_id}") for a in (fav, "continue", "share")]
    return [row1, row2]


def child_temperature(action: str, temperature: float) -> float:
    """Hotter and Cooler move by 0.1 within the grammar's temperature range; Reroll keeps it."""
    delta = {"hotter": TEMPERATURE_STEP, "cooler": -TEMPERATURE_STEP}.get(action, 0.0)
    limits = RANGES["temperature"]
    return round(min(max(temperature + delta, limits.low), limits.high), 2)


COMPOSING = N_("🎼 Composing…")
SORRY = N_("⚠️ Something went wrong on my side; please try again.")
STORAGE_DOWN = N_("⚠️ My database is out of reach right now (restarting, perhaps); nothing was saved. Try again soon.")
OUT_OF_DATE = N_("This button is out of date; send /compose again.")


def progress_line(
    kind: str,
    done: int = 0,
    total: int = 0,
    eta_s: float | None = None,
    position: int | None = None,
    t: Translations = ENGLISH,
) -> str:
    """One line for the message the bot keeps editing while a track is composed."""
    if kind == "queued":
        return (
            t.gettext("⏳ In the queue (#{position})…").format(position=position)
            if position
            else t.gettext("⏳ In the queue…")
        )
    if kind == "running":
        if not total:
            return t.gettext(COMPOSING)
        pct = min(100, round(100 * done / total))
        bar = "▓" * (pct // 10) + "░" * (10 - pct // 10)
        if eta_s is None:
            return t.gettext("🎼 Composing {bar} {pct}%").format(bar=bar, pct=pct)
        return t.gettext("🎼 Composing {bar} {pct}% · ~{eta} s left").format(bar=bar, pct=pct, eta=round(eta_s))
    if kind == "rendering":
        return t.gettext("🎹 Recording…")
    if kind == "done":
        return t.gettext("✅ Done")
    if kind == "cancelled":
        return t.gettext("✖️ Cancelled")
    return t.gettext("⚠️ Something went wrong")


# --- several candidates at once (/compose count=3): the user keeps one -----------------------------

KEEP = re.compile(r"^keep:(\d{1,12})(?::(\d{1,12}))?$")
PICK_ONE = N_("👆 Pick one to keep (the others stay in your /history)")
ONLY_THE_ASKER = N_("only the person who asked for these can pick one")


@dataclass(frozen=True)
class KeepPress:
    track_id: int
    message_id: int | None  # where the candidate is shown (Telegram: its message in the album)


def keep_buttons(
    track_ids: list[int], message_ids: list[int] | None = None, t: Translations = ENGLISH
) -> list[list[Button]]:
    """Keep 1 … Keep N under a group of candidates, in one row. `message_ids`: each candidate's own
    message, carried so that the pick can remove them all (the buttons are the only record)."""
    ids = message_ids or [None] * len(track_ids)
    return [
        [
            Button(
                t.gettext("Keep {n}").format(n=n),
                f"keep:{track_id}" + (f":{message_id}" if message_id is not None else ""),
            )
            for n, (track_id, message_id) in enumerate(zip(track_ids, ids), 1)
        ]
    ]


def parse_keep(data: str) -> KeepPress | None:
    """A Keep button's data back; None for anything we did not make."""
    m = KEEP.match(data or "")
    return KeepPress(int(m.group(1)), int(m.group(2)) if m.group(2) else None) if m else None


def candidate_line(n: int, track: TrackCard) -> str:
    """A candidate as its group shows it: the number its Keep button has, its title and length."""
    m, s = divmod(round(track.duration_s), 60)
    return f"{n} · {track.title} · {m}:{s:02d}"


def candidates_progress(
    kind: str,
    count: int,
    ready: int,
    done: int,
    total: int,
    eta_s: float | None,
    position: int | None,
    t: Translations = ENGLISH,
) -> str:
    """The one progress line of a group of candidates, all of them together."""
    line = progress_line(kind, done, total, eta_s, position, t)
    if kind == "queued":
        text = t.ngettext("{line} ({count} candidate)", "{line} ({count} candidates)", count)
    else:  # counted by those ready: the words agree with that number in some languages
        text = t.ngettext("{line} · {ready} of {count} ready", "{line} · {ready} of {count} ready", ready)
    return text.format(line=line, count=count, ready=ready)


def candidates_missing(count: int, endings: list[str], t: Translations = ENGLISH) -> str:
    """How the candidates that did not come ended (each ending's progress line)."""
    text = t.ngettext(
        "{n} of {count} candidates did not come: {endings}",
        "{n} of {count} candidates did not come: {endings}",
        len(endings),
    )
    return text.format(n=len(endings), count=count, endings="; ".join(endings))

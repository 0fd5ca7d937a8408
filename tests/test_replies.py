"""Replies shared by the chat front ends: captions, buttons that survive restarts, progress."""

from bot.replies import (
    RERENDER_INSTRUMENTS,
    KeepPress,
    caption,
    child_temperature,
    keep_buttons,
    parse_button,
    parse_keep,
    progress_line,
    track_buttons,
)
from generator.instruments import INSTRUMENTS


def test_caption_names_genre_number_length_and_recipe():
    text = caption(42, "calm", 31.4, 7, {"temperature": 0.9, "top_k": 40}, "piano", parent_id=41, lineage="hotter")
    assert text.splitlines() == ["Ambient #42 · 0:31 · piano", "seed 7 · temp 0.9 · top-k 40", "hotter of #41"]


def test_buttons_carry_their_action_and_track_and_parse_back():
    rows = track_buttons(42)
    labels = [b.label for row in rows for b in row]
    assert labels == ["🔁 Reroll", "🔥 Hotter", "❄️ Cooler", "⭐ Favourite", "➕ Continue", "📤 Share"]
    for row in rows:
        for b in row:
            press = parse_button(b.data)
            assert press is not None and press.track_id == 42 and len(b.data.encode()) <= 64  # Telegram's limit
    assert track_buttons(42, favourite=True)[1][0].data == "unfav:42"
    for forged in ("", "rm:42", "reroll:-1", "reroll:42;drop", "hotter:" + "9" * 20):
        assert parse_button(forged) is None


def test_hotter_and_cooler_step_by_a_tenth_within_range():
    assert child_temperature("hotter", 0.9) == 1.0
    assert child_temperature("cooler", 0.9) == 0.8
    assert child_temperature("reroll", 0.9) == 0.9
    assert child_temperature("hotter", 2.0) == 2.0 and child_temperature("cooler", 0.1) == 0.1


def test_progress_lines():
    assert progress_line("queued", position=3) == "⏳ In the queue (#3)…"
    assert progress_line("running", 50, 200, 12.4) == "🎼 Composing ▓▓░░░░░░░░ 25% · ~12 s left"
    assert progress_line("rendering") == "🎹 Recording…"


def test_keep_buttons_number_the_candidates_and_parse_back():
    [row] = keep_buttons([41, 42, 43], [7, 8, 9])
    assert [b.label for b in row] == ["Keep 1", "Keep 2", "Keep 3"]
    assert [parse_keep(b.data) for b in row] == [KeepPress(41, 7), KeepPress(42, 8), KeepPress(43, 9)]
    assert all(len(b.data.encode()) <= 64 for b in keep_buttons([10**12 - 1], [10**12 - 1])[0])  # Telegram's limit
    assert [b.data for b in keep_buttons([41, 42])[0]] == ["keep:41", "keep:42"]  # Discord's: the track alone
    for forged in ("keep:", "keep:x", "keep:1:2:3", "keep:-1", "reroll:42"):
        assert parse_keep(forged) is None


def test_the_instruments_offered_under_a_track_are_the_generators_own():
    assert 6 <= len(RERENDER_INSTRUMENTS) <= 8 and set(RERENDER_INSTRUMENTS) <= set(INSTRUMENTS)


def test_every_midi_fault_the_parser_names_has_words_in_the_bot():
    """A fault the generator names and the bot has no words for would be told as "damaged"."""
    from bot.replies import MIDI_DAMAGED, MIDI_FAULTS, midi_fault_text
    from generator.tokenizer import MIDI_FAULTS as NAMED
    from jobs.api import UnusableMidi

    assert set(MIDI_FAULTS) == set(NAMED) - {"damaged"}
    assert (
        midi_fault_text(UnusableMidi("…", "no_notes"))
        == "that MIDI file has no notes I can continue (I use the piano's notes 21–96)"
    )
    assert midi_fault_text(UnusableMidi("…", "damaged")) == MIDI_DAMAGED
    assert midi_fault_text(UnusableMidi("that MIDI file is 2.0 MB; send one up to 1 MB")).startswith(
        "that MIDI file is 2.0 MB"
    )

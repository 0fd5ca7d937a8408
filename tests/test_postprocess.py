"""The reference's clean-ups and the degenerate-sample check."""

from generator import vocab as V
from generator.postprocess import clip_velocities, is_degenerate, postprocess, remove_long_pauses, repetition_share
from generator.tokenizer import Note, encode_notes

SEC = V.TIME_SHIFT + 99  # one second


def test_silences_over_three_seconds_are_dropped_but_held_notes_are_kept():
    silent = [60, 288 + 9, 128 + 60, SEC, SEC, SEC, 288 + 9, 62]
    assert remove_long_pauses(silent) == [60, 288 + 9, 128 + 60, 62]
    held = [60, SEC, SEC, SEC, SEC, 128 + 60]
    assert remove_long_pauses(held) == held
    short = [60, 128 + 60, SEC, SEC, SEC, 62]
    assert remove_long_pauses(short) == short


def test_velocities_are_clipped_to_30_100():
    assert clip_velocities([256 + 0, 256 + 31, 256 + 15, 60]) == [256 + 7, 256 + 25, 256 + 15, 60]
    assert postprocess([256 + 31, 60]) == [256 + 25, 60]


def test_a_hammered_key_is_degenerate_and_music_is_not():
    hammered = [Note(i * 10, i * 10 + 10, 60, 80) for i in range(50)]
    assert repetition_share(hammered) == 1.0
    assert is_degenerate(encode_notes(hammered))
    melody = [Note(i * 20, i * 20 + 15, 60 + i % 5, 80) for i in range(50)]
    assert not is_degenerate(encode_notes(melody))
    assert repetition_share([]) == 0.0


def test_a_piece_without_notes_is_degenerate():
    assert is_degenerate([V.TIME_SHIFT + 99] * 3)  # three seconds of nothing
    assert is_degenerate([V.VELOCITY + 20, V.NOTE_ON + 60, V.NOTE_OFF + 60])  # zero length: no note
    assert not is_degenerate([V.NOTE_ON + 60, V.TIME_SHIFT + 9, V.NOTE_OFF + 60])


def test_one_regeneration_policy_composes_a_degenerate_piece_again_with_the_next_seed_until_tries_run_out():
    from generator.params import GenerationRequest
    from generator.track import RESEED, regenerate

    request = GenerationRequest("jazz", max_new_tokens=100, seed=7)
    hammered = encode_notes([Note(i * 10, i * 10 + 10, 60, 80) for i in range(50)])
    melody = encode_notes([Note(i * 20, i * 20 + 15, 60 + i % 5, 80) for i in range(50)])
    assert regenerate(request, hammered, attempt=1, tries=3).seed == 7 + RESEED
    assert regenerate(request, hammered, attempt=2, tries=3).seed == 7 + 2 * RESEED
    assert regenerate(request, hammered, attempt=3, tries=3) is None  # spent: the last one is kept
    assert regenerate(request, melody, attempt=1, tries=3) is None

"""Rendering speed: seconds of audio per wall second for MIDI → MP3, the end-to-end time of
`melomania compose ambient --seconds 60` split into generate / synthesize / encode, and a band
track's render time against the same piece solo (jazz, pop, ambient; solo and band alternate).

    python bench/render.py [--seconds 60] [--checkpoint PATH] [--rounds 3]

Last line: audio_s=… wall_s=… realtime=…
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from generator import GenerationRequest, load_model, preset_sampling
from generator.render import Tags, render_mp3
from generator.tokenizer import Note, notes_to_midi
from generator.track import compose, write_track


def reference_piece(seconds: float) -> list[Note]:
    """A dense two-hand texture (about 12 notes a second) as a fixed rendering load."""
    notes, t = [], 0
    while t < seconds * 100:
        for k, pitch in enumerate((48, 55, 64, 67)):
            notes.append(Note(t + 5 * k, t + 90, pitch + (t // 200) % 5, 60 + k * 8))
        for k in range(8):
            notes.append(Note(t + 12 * k, t + 12 * k + 10, 72 + (k * 3 + t // 100) % 12, 70))
        t += 100
    return notes


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--checkpoint", help="model for the end-to-end compose (default: the shipped one)")
    ap.add_argument("--rounds", type=int, default=3, help="solo/band pairs per genre")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        # 1. rendering alone, on a fixed piece
        midi = notes_to_midi(reference_piece(args.seconds))
        t0 = time.perf_counter()
        timings = render_mp3(midi, tmpdir / "ref.mp3", Tags("bench", "pop"))
        wall = time.perf_counter() - t0
        print(
            f"render: {timings.audio_seconds:.1f} s of audio in {wall:.2f} s "
            f"(synthesize {timings.synth_seconds:.2f} s, normalise+encode {timings.encode_seconds:.2f} s)"
        )

        # 2. end to end, as `melomania compose ambient --seconds N`
        from melomania.settings import Settings

        ckpt = args.checkpoint or Settings().checkpoint_path()
        if ckpt is None:
            print("compose: skipped, no checkpoint configured or shipped")
        else:
            loaded = load_model(ckpt)
            request = GenerationRequest(
                "calm", preset_sampling("calm", loaded.presets), max_seconds=args.seconds, seed=42
            )
            t1 = time.perf_counter()
            (piece,) = compose(loaded.model, [request])
            t_gen = time.perf_counter() - t1
            t2 = time.perf_counter()
            files = write_track(piece.tokens, tmpdir / "ambient-42", Tags("Ambient #42", "ambient"))
            t_write = time.perf_counter() - t2
            print(
                f"compose ambient --seconds {args.seconds:g}: generate {t_gen:.2f} s "
                f"({len(piece.new_tokens)} tokens, {len(piece.new_tokens) / t_gen:.0f} tokens/s), "
                f"synthesize {files.timings.synth_seconds:.2f} s, encode {files.timings.encode_seconds:.2f} s, "
                f"midi+png {t_write - files.timings.synth_seconds - files.timings.encode_seconds:.2f} s; "
                f"total {t_gen + t_write:.2f} s for {files.seconds:.1f} s of audio"
            )
            band_vs_solo(loaded, args.seconds, args.rounds, tmpdir)
    print(f"audio_s={timings.audio_seconds:.1f} wall_s={wall:.2f} realtime={timings.audio_seconds / wall:.1f}")


def band_vs_solo(loaded, seconds: float, rounds: int, tmpdir: Path) -> None:
    """Write (MIDI, roll, MP3) each genre's piece solo and with its band, alternating, and print
    the median times and their ratio (the band's analysis and arranging included)."""
    import statistics

    for genre in ("jazz", "pop", "calm"):
        request = GenerationRequest(genre, preset_sampling(genre, loaded.presets), max_seconds=seconds, seed=7)
        (piece,) = compose(loaded.model, [request])
        times: dict[str, list[float]] = {"solo": [], "band": []}
        for _ in range(rounds):
            for arrangement in ("solo", "band"):
                t0 = time.perf_counter()
                write_track(
                    piece.tokens,
                    tmpdir / f"{genre}-{arrangement}",
                    Tags("bench", genre),
                    seed=7,
                    arrangement=arrangement,
                )
                times[arrangement].append(time.perf_counter() - t0)
        solo, band = statistics.median(times["solo"]), statistics.median(times["band"])
        print(f"band vs solo, {genre} {seconds:g} s: solo {solo:.2f} s, band {band:.2f} s, ratio {band / solo:.2f}")


if __name__ == "__main__":
    main()

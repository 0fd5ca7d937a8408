"""How well band mode's analysis hears the piano: chords per beat and the pulse, on realised lead sheets.

    python bench/harmony.py [--sheets 50] [--corpus /work/shared/corpus/jazz-leadsheets]

Realises N parkR charts the analysis was neither tuned nor checked on (`training.harmony_eval.held_out`)
with `training.jazz`, analyses each realisation's notes as the arranger gets them (`notes_of`) and
compares with what the realiser played. Chords: the share of beats whose chord (root and quality, and
root only) is right, asking the analysis for the chord at each true beat's middle, so pulse and chords
are judged together; the same with the true beats handed to `recognise_chords`, to tell the two apart.
Beats with no chord, an augmented triad or a slash chord are not scored. Pulse: tempo within 4 % (and
within 4 % of half, the same or double), beats per bar, the first downbeat on a bar line.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from generator.arrange.analysis import QUALITIES, analyse, recognise_chords
from training.harmony_eval import held_out, realised_truth, score
from training.leadsheets import iter_lead_sheets


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sheets", type=int, default=50)
    parser.add_argument("--corpus", type=Path, default=Path("/work/shared/corpus/jazz-leadsheets"))
    args = parser.parse_args()
    if not args.corpus.is_dir():
        sys.exit(f"no lead-sheet corpus at {args.corpus}")

    sheets = list(iter_lead_sheets(args.corpus, sources=("parkr",)))
    total: Counter[str] = Counter()
    by_quality: Counter[tuple[str, bool]] = Counter()
    seconds = analysed = 0.0
    for sheet, seed in held_out(sheets, args.sheets):
        notes, truth = realised_truth(sheet, seed)
        started = time.perf_counter()
        harmony = analyse(notes)
        seconds += time.perf_counter() - started
        analysed += (notes[-1].end if notes else 0) / 6000
        s = score(harmony, truth)
        given = recognise_chords(notes, truth.beats, beats_per_bar=truth.beats_per_bar)
        for k, label in enumerate(truth.labels):
            if label is None or truth.slash[k]:
                continue
            total["given both"] += given[k] == label
            total["given root"] += given[k] is not None and given[k].root == label.root
            heard = harmony.chord_at((truth.beats[k] + truth.beats[k + 1]) / 2)
            by_quality[(label.quality, heard == label)] += 1
        total["sheets"] += 1
        total["beats"] += s.beats
        total["slash"] += s.slash
        total["both"] += s.both
        total["root"] += s.root
        total["tempo"] += s.tempo
        total["octave"] += s.tempo_octave
        total["meter"] += s.meter
        total["downbeat"] += s.downbeat
        total["steady"] += harmony.pulse.steady

    n, beats = total["sheets"], max(total["beats"], 1)
    print(f"{n} held-out parkR charts, {total['beats']} beats scored ({total['slash']} slash-chord beats left out)")
    for name, prefix in (("analysed pulse", ""), ("true beats", "given ")):
        both, root = total[prefix + "both"] / beats, total[prefix + "root"] / beats
        print(f"chords, {name + ':':15s} root+quality {both:.1%}  root {root:.1%}")
    shares = []
    for quality in QUALITIES:
        right, wrong = by_quality[(quality, True)], by_quality[(quality, False)]
        if right + wrong:
            shares.append(f"{quality} {right / (right + wrong):.0%} of {right + wrong}")
    print("by quality: " + ", ".join(shares))
    share = {key: f"{total[key] / n:.0%}" for key in ("tempo", "octave", "meter", "downbeat", "steady")}
    print(
        f"pulse: tempo within 4 % {share['tempo']} (at ×½/×1/×2 {share['octave']}), beats per bar {share['meter']}, "
        f"first downbeat {share['downbeat']}, steady {share['steady']}"
    )
    per_minute = seconds / max(analysed, 1e-9) * 1000
    print(f"analysis: {seconds / n * 1000:.0f} ms a piece, {per_minute:.0f} ms a minute of music")


if __name__ == "__main__":
    main()

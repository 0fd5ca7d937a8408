"""The `melomania` console command: compose, render, list genres and instruments."""

from __future__ import annotations

import secrets
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer
from pydantic import SecretStr, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn, TimeRemainingColumn
from rich.table import Table

from generator import GenerationRequest, GeneratorError, preset_sampling
from generator import vocab as V
from generator.controls import parse_level
from generator.device import Placement
from generator.instruments import INSTRUMENTS, instrument_program
from generator.params import Overrides, draw_seed
from generator.render import INSTALL_HINT, RenderError, Tags, find_soundfont, load_fluidsynth

from .settings import Settings

if TYPE_CHECKING:  # torch is imported only by the commands that compose
    from generator.checkpoint import LoadedModel
    from generator.device import Resolved

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compose piano music with a Music Transformer.",
)
out = Console()
err = Console(stderr=True)

MAX_CLI_SECONDS = 600
MAX_CLI_TOKENS = 20_000
MAX_COUNT = 16


def fail(message: str) -> NoReturn:
    """One line on stderr, exit code 2, no traceback."""
    err.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def user_errors():
    """What a user can cause while composing or rendering becomes one line and exit code 2."""
    try:
        yield
    except (GeneratorError, RenderError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"cannot write the track: {exc.strerror or exc}; free some space or choose another --out")


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problem = exc.errors()[0]
        fail(f"setting MELOMANIA_{str(problem['loc'][0]).upper()} is invalid: {problem['msg']}")


def check_render_tools(settings: Settings):
    """Everything rendering needs, checked before minutes of composing rather than after."""
    if shutil.which("ffmpeg") is None:
        fail(f"ffmpeg is not installed; {INSTALL_HINT}")
    load_fluidsynth()
    return find_soundfont(settings.soundfont)


def writable_dir(path: Path) -> Path:
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{secrets.token_hex(4)}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        fail(f"cannot write to --out {path}: {exc.strerror or exc}; choose another folder with --out DIR")
    return path


# Where a model is loaded: over MELOMANIA_DEVICE and MELOMANIA_DTYPE (generator/device.py).
DeviceOption = Annotated[
    str | None,
    typer.Option(help="auto (a CUDA GPU when present), cpu, cuda or cuda:N", show_default="MELOMANIA_DEVICE or auto"),
]
DtypeOption = Annotated[
    str | None,
    typer.Option(
        help="auto (bf16 on a GPU that has it, the CPU's own choices), fp32, bf16 or fp16",
        show_default="MELOMANIA_DTYPE or auto",
    ),
]


def resolve_placement(settings: Settings, device: str | None = None, dtype: str | None = None) -> Resolved:
    """The device and precision to load a model with, checked against this machine now: asking
    for what it has not is one line naming what it has."""
    from generator.device import PlacementError

    try:
        return settings.placement(device, dtype).resolve(settings.exact_decoding)
    except PlacementError as exc:
        fail(str(exc))


def load_configured_model(
    settings: Settings, checkpoint: Path | None, placement: Resolved | None = None
) -> tuple[Path, LoadedModel]:
    """The configured model, where `placement` says (None: where the settings say)."""
    path = checkpoint or settings.checkpoint_path()
    if path is None:
        fail(
            "no model checkpoint is configured and none is shipped yet; set MELOMANIA_CHECKPOINT to a "
            "checkpoint file (the published music-composer state_dict loads unchanged) or pass --checkpoint"
        )
    import torch

    from generator import load_model

    placement = placement or resolve_placement(settings)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    return path, load_model(path, placement)


def check_soundfont(soundfont: Path) -> None:
    """Load the soundfont now, on this thread (rendering reuses it), so a file that is not a
    soundfont is one line before composing. FluidSynth and libinstpatch print their own lines
    on stderr while loading; they are held back, and the first error joins ours."""
    import os
    import tempfile

    from generator.render import synthesizer

    sys.stderr.flush()
    with tempfile.TemporaryFile() as said:
        saved = os.dup(2)
        os.dup2(said.fileno(), 2)
        try:
            synthesizer(soundfont)
            problem = None
        except RenderError as exc:
            problem = exc
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        said.seek(0)
        lines = said.read().decode(errors="replace").splitlines()
    if problem is None:
        return
    reason = next((line.split("error:", 1)[1].strip() for line in lines if "error:" in line), "")
    fail(
        f"{soundfont} is not a soundfont FluidSynth can load{f' ({reason})' if reason else ''}; "
        "set MELOMANIA_SOUNDFONT to a General MIDI .sf2 file, or unset it to use Debian's fluid-soundfont-gm"
    )


def given(ctx: typer.Context, name: str) -> bool:
    """Whether option `name` was given on the command line (not by default or the environment)."""
    source = ctx.get_parameter_source(name)  # typer's own click's ParameterSource: compared by name
    return source is not None and source.name == "COMMANDLINE"


SAMPLING_OPTIONS = (
    "temperature",
    "top_k",
    "top_p",
    "at_least_k",
    "rp_penalty",
    "rp_restore_speed",
    "max_hold",
    "truncate",
    "bass",
    "density",
    "loudness",
    "polyphony",
)


@app.command()
def compose(
    ctx: typer.Context,
    genre: Annotated[
        str | None,
        typer.Argument(help="classic, jazz, ambient (calm) or pop; optional with --recipe", show_default=False),
    ] = None,
    seconds: Annotated[float | None, typer.Option(help="length in seconds of music", show_default="30")] = None,
    tokens: Annotated[int | None, typer.Option(help="length in new events instead of seconds")] = None,
    temperature: Annotated[float | None, typer.Option(help="randomness; genre preset by default")] = None,
    top_k: Annotated[int | None, typer.Option(help="sample among the k likeliest events (0: off)")] = None,
    top_p: Annotated[float | None, typer.Option(help="nucleus mass in (0, 1]")] = None,
    at_least_k: Annotated[int | None, typer.Option(help="never sample from fewer than k events")] = None,
    rp_penalty: Annotated[float | None, typer.Option(help="repetition penalty per repeated note (0: off)")] = None,
    rp_restore_speed: Annotated[float | None, typer.Option(help="penalty restored per second")] = None,
    max_hold: Annotated[float | None, typer.Option(help="release a key held this many seconds (0: off)")] = None,
    truncate: Annotated[str | None, typer.Option(help="what top-k/top-p cut: 'all' events or only 'pitches'")] = None,
    bass: Annotated[
        float | None, typer.Option(help="the bass line (C3 and below), -4 (thinner) to 4 (stronger); 0: the model's")
    ] = None,
    density: Annotated[
        str | None, typer.Option(help="notes per second: very-low, low, medium, high, very-high (or sparse, busy)")
    ] = None,
    loudness: Annotated[str | None, typer.Option(help="mean velocity: very-low … very-high (or soft, loud)")] = None,
    polyphony: Annotated[str | None, typer.Option(help="notes at once: very-low … very-high (or thin, thick)")] = None,
    seed: Annotated[int | None, typer.Option(help="same seed, same piece", show_default="random")] = None,
    instrument: Annotated[str, typer.Option(help="piano, electric piano, strings, pad, vibraphone, …")] = "piano",
    arrangement: Annotated[
        str | None,
        typer.Option(
            help="'solo' piano or 'band': the genre's bass, drums or pads around it",
            show_default="band for jazz, ambient and pop; solo for classic",
        ),
    ] = None,
    primer: Annotated[Path | None, typer.Option(help="a MIDI file to continue")] = None,
    primer_seconds: Annotated[
        float | None, typer.Option(help="use only this many seconds of the primer", show_default="all of it")
    ] = None,
    primer_from: Annotated[str, typer.Option(help="take the primer's seconds from its 'start' or 'end'")] = "end",
    count: Annotated[int, typer.Option(help=f"how many tracks (1–{MAX_COUNT}), composed together")] = 1,
    recipe: Annotated[
        str | None,
        typer.Option(
            help="a printed recipe line to compose again (in quotes); options given with it replace its values",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="folder for the MP3, MIDI and PNG", envvar="MELOMANIA_OUT_DIR", show_default="out"),
    ] = None,
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="model weights", envvar="MELOMANIA_CHECKPOINT", show_default="the shipped model"),
    ] = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Compose tracks and write MP3, MIDI and a piano-roll PNG for each."""
    with err.status("starting…") as status:
        from generator.track import Recipe

        settings = load_settings()
        with user_errors():
            wanted = None
            if recipe is not None:
                # the recipe fills every option not given on the command line
                wanted = Recipe.parse(recipe)
                genre = genre if given(ctx, "genre") else wanted.genre
                if not (given(ctx, "seconds") or given(ctx, "tokens")):
                    seconds, tokens = wanted.max_seconds, wanted.max_new_tokens
                from_recipe = {
                    name: getattr(wanted.sampling, name) for name in SAMPLING_OPTIONS if not given(ctx, name)
                }
                temperature = from_recipe.get("temperature", temperature)
                top_k = from_recipe.get("top_k", top_k)
                top_p = from_recipe.get("top_p", top_p)
                at_least_k = from_recipe.get("at_least_k", at_least_k)
                rp_penalty = from_recipe.get("rp_penalty", rp_penalty)
                rp_restore_speed = from_recipe.get("rp_restore_speed", rp_restore_speed)
                max_hold = from_recipe.get("max_hold", max_hold)
                truncate = from_recipe.get("truncate", truncate)
                bass = from_recipe.get("bass", bass)
                density = from_recipe.get("density", density)
                loudness = from_recipe.get("loudness", loudness)
                polyphony = from_recipe.get("polyphony", polyphony)
                seed = seed if given(ctx, "seed") else wanted.seed
                instrument = instrument if given(ctx, "instrument") else wanted.instrument
                arrangement = arrangement if given(ctx, "arrangement") else wanted.arrangement
                if not given(ctx, "primer"):
                    primer = Path(wanted.primer) if wanted.primer else None
                    primer_seconds = primer_seconds if given(ctx, "primer_seconds") else wanted.primer_seconds
                    primer_from = primer_from if given(ctx, "primer_from") else wanted.primer_from
            if genre is None:
                fail("give a genre (classic, jazz, ambient or pop), or --recipe with a printed recipe")
            compose_tracks(
                settings,
                status,
                genre=genre,
                seconds=seconds,
                tokens=tokens,
                overrides=dict(
                    temperature=temperature,
                    top_k=top_k,
                    top_p=top_p,
                    topp_temperature=wanted.sampling.topp_temperature if wanted else None,
                    at_least_k=at_least_k,
                    rp_penalty=rp_penalty,
                    rp_restore_speed=rp_restore_speed,
                    max_hold=max_hold,
                    truncate=truncate,
                    bass=bass,
                    density=density,
                    loudness=loudness,
                    polyphony=polyphony,
                ),
                seed=seed,
                instrument=instrument,
                arrangement=arrangement,
                primer=primer,
                primer_seconds=primer_seconds,
                primer_from=primer_from,
                count=count,
                out_dir=out_dir,
                checkpoint=checkpoint,
                model_sha256=wanted.checkpoint_sha256 if wanted and not given(ctx, "checkpoint") else "",
                placement=resolve_placement(settings, device, dtype),
                recipe_device=wanted.device if wanted else None,
            )


def compose_tracks(
    settings: Settings,
    status,
    *,
    genre: str,
    seconds: float | None,
    tokens: int | None,
    overrides: dict,
    seed: int | None,
    instrument: str,
    arrangement: str | None,
    primer: Path | None,
    primer_seconds: float | None,
    primer_from: str,
    count: int,
    out_dir: Path | None,
    checkpoint: Path | None,
    model_sha256: str = "",
    placement: Resolved | None = None,
    recipe_device: str | None = None,
) -> None:
    """`compose` once its options (and any recipe) are settled; `status` is the start-up line,
    which this stops before the progress bar starts. `model_sha256`: the start of the checkpoint
    digest a recipe was composed with, checked against the loaded model ('' for none).
    `placement`: where to compose (None: where the settings say); `recipe_device`: where a
    recipe was composed, if one is composed again."""
    import os

    from generator.arrangements import check_arrangement, default_arrangement
    from generator.decoding import decoding_threads
    from generator.tokenizer import primer_tokens
    from generator.track import Recipe, track_title, write_track
    from generator.track import compose as compose_pieces

    genre = V.canonical_genre(genre)
    if seconds is not None and tokens is not None:
        fail("give --seconds or --tokens, not both")
    if tokens is None and seconds is None:
        seconds = 30.0
    if seconds is not None and not 1 <= seconds <= MAX_CLI_SECONDS:
        fail(f"--seconds must be from 1 to {MAX_CLI_SECONDS}, got {seconds:g} (for example --seconds 60)")
    if tokens is not None and not 1 <= tokens <= MAX_CLI_TOKENS:
        fail(f"--tokens must be from 1 to {MAX_CLI_TOKENS}, got {tokens} (for example --tokens 1024)")
    if not 1 <= count <= MAX_COUNT:
        fail(f"--count must be from 1 to {MAX_COUNT}, got {count}")
    if primer_from not in ("start", "end"):
        fail(f"--primer-from must be 'start' or 'end', got {primer_from!r}")
    program = instrument_program(instrument)
    arrangement = check_arrangement(arrangement) if arrangement is not None else default_arrangement(genre)
    for name in ("density", "loudness", "polyphony"):
        overrides[name] = parse_level(name, overrides[name])
    wanted = Overrides(**overrides)
    # the generator's own ranges, wider than chat's (generator.params.RANGES): this is the lab tool
    wanted.resolve(genre)  # a bad value is found before minutes of loading
    if primer:
        status.update("reading the primer…")
    primed = tuple(primer_tokens(primer, primer_seconds, primer_from)) if primer else ()  # type: ignore[arg-type]
    status.update("checking the soundfont…")
    soundfont = check_render_tools(settings)
    check_soundfont(soundfont)
    folder = writable_dir(out_dir or settings.out_dir)
    first_seed = seed if seed is not None else draw_seed()
    status.update("loading the model…")
    ckpt_path, loaded = load_configured_model(settings, checkpoint, placement)
    here = loaded.placement.label
    if recipe_device is not None and recipe_device != here:
        err.print(
            f"note: the recipe was composed on {recipe_device}, this is {here}; the same seed may write "
            "another piece here",
            highlight=False,
        )
    if model_sha256 and not loaded.sha256.startswith(model_sha256):
        fail(
            f"the recipe was composed with a model of sha256 {model_sha256}, not {ckpt_path.name} "
            f"({loaded.sha256[:12]}); pass --checkpoint with that model, or with this one to compose it anyway"
        )
    if not settings.threads and here == "cpu":  # like the bots: one thread for a small model's short ops
        import torch

        torch.set_num_threads(decoding_threads(loaded.model, len(os.sched_getaffinity(0))))
    sampling = wanted.resolve(genre, loaded.presets)  # the checkpoint's own presets
    requests = [
        GenerationRequest(
            genre, sampling, max_new_tokens=tokens, max_seconds=seconds, seed=first_seed + i, primer=primed
        )
        for i in range(count)
    ]
    status.stop()

    by_seconds = tokens is None
    t0 = time.perf_counter()
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        TextColumn(
            "{task.completed:.0f}/{task.total:.0f} s of music" if by_seconds else "{task.completed}/{task.total} events"
        ),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task(
            f"composing {count} × {V.display_name(genre)}", total=(seconds if by_seconds else tokens) * count
        )

        def advance(tokens_done: int, _expected: int, seconds_done: float) -> None:
            bar.update(task, completed=seconds_done if by_seconds else tokens_done)

        pieces = compose_pieces(loaded.model, requests, progress=advance)
    t_generate = time.perf_counter() - t0

    for piece in pieces:
        r = piece.request
        recipe = Recipe.of(
            r,
            model=ckpt_path.name,
            checkpoint_sha256=loaded.sha256,
            instrument=instrument,
            primer=str(primer) if primer else None,
            primer_seconds=primer_seconds if primer else None,
            primer_from=primer_from,
            arrangement=arrangement,
            device=here,
        )
        title = track_title(genre, r.seed)
        stem = folder / f"{V.display_name(genre)}-{r.seed}"
        with err.status(f"rendering {title}"):
            files = write_track(
                piece.tokens,
                stem,
                Tags(title, V.display_name(genre), recipe.summary()),
                program,
                soundfont,
                seed=r.seed,
                primer_until=len(piece.tokens) - len(piece.new_tokens) if r.primer else None,
                arrangement=arrangement,
            )
        out.print(f"[bold green]♪ {escape(title)}[/]  {files.seconds:.1f} s, {files.notes} notes")
        out.print(f"  mp3  {files.mp3}\n  midi {files.midi}\n  png  {files.png}", highlight=False)
        out.print(f"  recipe: {recipe.summary()}", highlight=False, soft_wrap=True, markup=False)  # one line to copy
        out.print(
            f"  time: generate {t_generate:.1f} s (all {count}), synthesize "
            f"{files.timings.synth_seconds:.1f} s, encode {files.timings.encode_seconds:.1f} s",
            highlight=False,
        )


def render_stem(folder: Path, midi_file: Path, program: int | None) -> Path:
    """Where `render` writes: name.<instrument> (name.rendered with the file's own instruments),
    never the name.mp3 that `compose` wrote beside name.mid."""
    if program is None:
        return folder / f"{midi_file.stem}.rendered"
    name = next(n for n, p in INSTRUMENTS.items() if p == program)
    return folder / f"{midi_file.stem}.{name.replace(' ', '-')}"


@app.command()
def render(
    midi_file: Annotated[Path, typer.Argument(help="a .mid file")],
    instrument: Annotated[str | None, typer.Option(help="play every part on this instrument instead")] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", help="folder for the MP3 and PNG", envvar="MELOMANIA_OUT_DIR", show_default="out"),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="overwrite the MP3 and PNG if they exist")] = False,
) -> None:
    """Render a MIDI file to NAME.INSTRUMENT.mp3 (and a piano-roll PNG) with the configured
    soundfont, as it is: every instrument, drum and pause kept; only the instrument choice, if
    given, is applied. Never overwrites without --force."""
    from generator.pianoroll import clock, write_piano_roll
    from generator.render import render_mp3
    from generator.tokenizer import load_midi, notes_of

    settings = load_settings()
    with user_errors():
        program = instrument_program(instrument) if instrument else None
        midi = load_midi(midi_file)
        notes = notes_of(midi)
        if not notes:
            fail(f"{midi_file} has no notes to render")
        soundfont = check_render_tools(settings)
        folder = writable_dir(out_dir or settings.out_dir)
        stem = render_stem(folder, midi_file, program)
        mp3, png = stem.with_suffix(stem.suffix + ".mp3"), stem.with_suffix(stem.suffix + ".png")
        existing = [p for p in (mp3, png) if p.exists()]
        if existing and not force:
            fail(f"{existing[0]} exists; pass --force to overwrite it, or choose another --out")
        check_soundfont(soundfont)
        with err.status(f"rendering {midi_file.name}"):
            timings = render_mp3(
                midi,
                mp3,
                Tags(midi_file.stem, "", "rendered by melomania"),
                soundfont=soundfont,
                program=program,
            )
            seconds = max(n.end for n in notes) * V.TICK_SECONDS
            write_piano_roll(notes, png, title=f"{midi_file.stem} · {clock(seconds)}")
        out.print(
            f"[bold green]♪ {escape(midi_file.name)}[/]  {timings.audio_seconds:.1f} s\n"
            f"  mp3  {escape(str(mp3))}\n  png  {escape(str(png))}",
            highlight=False,
        )


@app.command()
def genres(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="model weights", envvar="MELOMANIA_CHECKPOINT", show_default="the shipped model"),
    ] = None,
) -> None:
    """The genres and the preset sampling values the configured model composes them with."""
    from generator import CheckpointError
    from generator.checkpoint import stored_presets

    settings = load_settings()
    path = checkpoint or settings.checkpoint_path()
    try:
        presets = stored_presets(path) if path else {}
    except CheckpointError as exc:
        fail(str(exc))
    table = Table("genre", "also", "temperature", "top_k", "top_p", "truncate", "bass", "controls")
    aliases = {canon: [a for a, c in V.GENRE_ALIASES.items() if c == canon] for canon in V.GENRES}
    for g in V.GENRES:
        p = preset_sampling(g, presets)
        name = V.display_name(g)
        table.add_row(
            name,
            ", ".join([a for a in aliases[g] + [g] if a != name]),
            f"{p.temperature:g}",
            str(p.top_k),
            f"{p.top_p:g}",
            p.truncate,
            f"{p.bass:+g}" if p.bass else "0",
            p.controls.words(),
        )
    out.print(table)


@app.command()
def instruments() -> None:
    """Instruments a track can be rendered with."""
    for name, program in INSTRUMENTS.items():
        out.print(f"{name:<16} General MIDI program {program + 1}", highlight=False)


data_app = typer.Typer(help="Training data.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("build")
def data_build(
    corpus: Annotated[Path, typer.Option(help="the MIDI corpus, one folder per genre")] = Path("../shared/corpus"),
    out_dir: Annotated[Path, typer.Option("--out", help="where to write the shards")] = Path("data/dataset"),
    permissive_only: Annotated[bool, typer.Option(help="only MIT-licensed sources (no NC, no SA)")] = False,
    val_fraction: Annotated[float, typer.Option(help="share of each genre's pieces held out")] = 0.05,
    jazz_leadsheets: Annotated[bool, typer.Option(help="realise jazz lead sheets into piano as jazz data")] = True,
    jazz_versions: Annotated[int, typer.Option(help="realisations per lead sheet")] = 2,
    seed: int = 0,
) -> None:
    """Encode the corpus into token shards split by piece, with a JSON summary."""
    from training.dataset import BuildConfig, build

    if not corpus.is_dir():
        fail(f"corpus folder not found: {corpus} (pass --corpus DIR)")
    if not 0 < val_fraction < 0.5:
        fail(f"--val-fraction must be between 0 and 0.5, got {val_fraction:g}")
    cfg = BuildConfig(
        corpus=corpus,
        out=writable_dir(out_dir),
        val_fraction=val_fraction,
        seed=seed,
        permissive_only=permissive_only,
        jazz_leadsheets=jazz_leadsheets,
        jazz_versions=jazz_versions,
    )
    with Progress(
        TextColumn("[bold]encoding"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:
        task = bar.add_task("encode", total=None)
        summary = build(cfg, progress=lambda done, total: bar.update(task, completed=done, total=total))
    table = Table("genre", "train pieces", "train tokens", "train hours", "val pieces", "val tokens")
    for g, splits in summary.genres.items():
        t, v = splits["train"], splits["val"]
        table.add_row(
            g, str(t["pieces"]), f"{t['tokens']:,}", f"{t['hours']:.1f}", str(v["pieces"]), f"{v['tokens']:,}"
        )
    out.print(table)
    for why, n in sorted(summary.skipped.items()):
        out.print(f"skipped {n}: {why}", highlight=False)
    out.print(f"wrote {cfg.out}/summary.json", highlight=False)


@app.command()
def train(
    config: Annotated[Path | None, typer.Option(help="TOML file of training settings")] = None,
    resume: Annotated[bool, typer.Option(help="continue the run in its out folder exactly where it stopped")] = False,
    max_minutes: Annotated[float | None, typer.Option(help="stop after this many minutes")] = None,
    max_steps: Annotated[int | None, typer.Option(help="total optimizer steps")] = None,
    out_dir: Annotated[Path | None, typer.Option("--out", help="run folder for checkpoints and log.csv")] = None,
    dtype: Annotated[
        str | None,
        typer.Option(
            help="auto (measure fp32 against bf16 here and keep the faster), fp32 or bf16",
            show_default="MELOMANIA_DTYPE or auto",
        ),
    ] = None,
    device: Annotated[
        str | None,
        typer.Option(help="auto (a GPU when present), cpu or cuda\\[:N]", show_default="MELOMANIA_DEVICE or auto"),
    ] = None,
    init: Annotated[
        Path | None, typer.Option(help="start from these weights (e.g. the shipped checkpoint) instead of random ones")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads for training (default: every core)")] = None,
) -> None:
    """Train the Music Transformer on the shards (resumable; checkpoints every few minutes)."""
    from generator.device import PlacementError
    from training.train import TrainConfig, Trainer

    settings = load_settings()
    try:  # the command line, else MELOMANIA_DEVICE and MELOMANIA_DTYPE where set, else the TOML's
        asked = Placement(device or "auto", dtype or "auto")
    except PlacementError as exc:
        fail(str(exc))
    device = (device and asked.device) or (settings.device if "device" in settings.model_fields_set else None)
    dtype = (dtype and asked.dtype) or (settings.dtype if "dtype" in settings.model_fields_set else None)
    if init is not None and not init.is_file():
        fail(f"--init checkpoint not found: {init}")
    try:
        cfg = TrainConfig.from_toml(
            config or "",
            max_minutes=max_minutes,
            max_steps=max_steps,
            out=str(out_dir) if out_dir else None,
            dtype=dtype,
            device=device,
            init=str(init) if init else None,
            threads=threads,
        )
    except (OSError, ValueError) as exc:
        fail(f"cannot use training config {config}: {exc}")
    if not Path(cfg.data, "summary.json").is_file():
        fail(f"no dataset in {cfg.data}; build one with: melomania data build --out {cfg.data}")
    try:
        trainer = Trainer(cfg, resume=resume, log=lambda message: out.print(message, highlight=False))
    except ValueError as exc:
        fail(f"cannot train: {exc}")
    params = sum(p.numel() for p in trainer.model.parameters())
    out.print(
        f"training {params / 1e6:.1f}M parameters from step {trainer.step} on {trainer.device} in {trainer.dtype}"
        f" → {cfg.out}",
        highlight=False,
    )
    with Progress(
        TextColumn("[bold]step {task.completed}/{task.total}"),
        BarColumn(),
        TextColumn("loss {task.fields[loss]:.3f}  {task.fields[tps]:,.0f} tok/s"),
        TimeRemainingColumn(),
        console=err,
    ) as bar:
        task = bar.add_task("train", total=cfg.max_steps, completed=trainer.step, loss=float("nan"), tps=0.0)
        trainer.run(on_step=lambda t, loss, tps: bar.update(task, completed=t.step, loss=loss, tps=tps))
    out.print(
        f"stopped at step {trainer.step}, best mean validation NLL {trainer.best_val:.3f}; checkpoints in {cfg.out}",
        highlight=False,
    )


@app.command("export-model")
def export_model(
    src: Annotated[Path, typer.Argument(help="a training checkpoint (runs/…/best.pt)")],
    dst: Annotated[Path, typer.Argument(help="where to write the shippable checkpoint")],
    fp16: Annotated[bool, typer.Option(help="store weights as fp16 (half the size)")] = True,
    presets: Annotated[
        Path | None,
        typer.Option(help="TOML of sampling presets per genre to ship with it (\\[jazz] temperature = 0.9)"),
    ] = None,
) -> None:
    """Strip optimizer state from a training checkpoint, for shipping, with its sampling presets."""
    import tomllib

    from generator.params import presets_from
    from training.train import export

    if not src.is_file():
        fail(f"checkpoint not found: {src}")
    meta = {}
    if presets is not None:
        try:
            raw = tomllib.loads(presets.read_text())
            presets_from(raw)  # every value checked before anything is written
        except (OSError, tomllib.TOMLDecodeError, GeneratorError, TypeError) as exc:
            fail(f"cannot use presets {presets}: {exc}")
        meta["sampling_presets"] = raw
    path = export(src, dst, fp16=fp16, **meta)
    out.print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", highlight=False)


db_app = typer.Typer(help="The database.", no_args_is_help=True)
app.add_typer(db_app, name="db")


@db_app.command("upgrade")
def db_upgrade(
    url: Annotated[
        str | None,
        typer.Option(
            help="database URL", envvar="MELOMANIA_DATABASE_URL", show_default="sqlite+aiosqlite:///data/melomania.db"
        ),
    ] = None,
    revision: Annotated[str, typer.Option(help="target revision")] = "head",
) -> None:
    """Create or migrate the database schema (Alembic)."""
    from alembic.script.revision import RevisionError
    from alembic.util import CommandError
    from sqlalchemy.exc import SQLAlchemyError

    from storage.migrate import upgrade

    target = url or load_settings().database_url
    try:
        upgrade(target, revision)
    except (CommandError, RevisionError) as exc:  # a revision that does not exist, or a range
        fail(f"cannot upgrade the database to revision {revision!r}: {str(exc).splitlines()[0]}")
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot upgrade the database: {str(exc).splitlines()[0]}")
    out.print(f"database at revision {revision}", highlight=False)


@app.command("build-kernel")
def build_kernel() -> None:
    """Build the decoding attention kernel for this machine (make setup and the Docker build run this)."""
    from generator.attention_kernel import build, load

    try:
        path = build()
    except Exception as exc:  # no compiler, or it failed: decoding keeps an fp32 cache, slower
        fail(f"the attention kernel did not build ({exc}); composing works without it, more slowly")
    if load() is None:
        fail("the attention kernel built but disagrees with plain torch; composing works without it")
    out.print(f"attention kernel built: {path}", highlight=False)


@app.command("bench-cpu")
def bench_cpu(
    checkpoint: Annotated[
        Path | None,
        typer.Option(help="model weights", envvar="MELOMANIA_CHECKPOINT", show_default="the shipped model"),
    ] = None,
) -> None:
    """Time a decode step in each precision at each batch size on this CPU, keep the fastest for
    decoding to use, and show the table (decoding measures it once by itself otherwise)."""
    import os

    import torch

    from generator.decoding import decoding_threads
    from generator.packed import for_decoding

    settings = load_settings()
    try:
        _, loaded = load_configured_model(settings, checkpoint)
    except GeneratorError as exc:
        fail(str(exc))
    if not settings.threads:  # the threads decoding runs on, which the table is kept for
        torch.set_num_threads(decoding_threads(loaded.model, len(os.sched_getaffinity(0))))
    fast = for_decoding(loaded.model, fresh=True)
    choice = fast.decoding_choice
    threads = torch.get_num_threads()
    if choice is None or not choice.ms:  # nothing was timed
        why = "exact decoding is set" if loaded.model.exact_decoding else "nothing else runs here"
        only = choice.by_bucket[1] if choice else "fp32"
        out.print(f"{only} at every batch size ({why}); {threads} thread(s)", highlight=False)
        return
    out.print(f"ms per decode step on {threads} thread(s), * the precision decoding uses:", highlight=False)
    out.print(choice.table(), highlight=False)


@app.command()
def worker(
    check: Annotated[
        bool, typer.Option("--check", help="exit 0 if a worker on this Redis is alive (for health checks), else 1")
    ] = False,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Run a generator worker: pull compose jobs from Redis (MELOMANIA_REDIS_URL), batch, render, store."""
    import logging

    from arq.connections import RedisSettings
    from arq.worker import run_worker

    from jobs.worker import WorkerConfig, WorkerSettings

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = load_settings()
    if check:
        import asyncio

        from arq.worker import async_check_health

        url = settings.redis_url or "redis://127.0.0.1:6379/0"
        check_redis(url)
        raise typer.Exit(asyncio.run(async_check_health(RedisSettings.from_dsn(url))))
    checkpoint = settings.checkpoint_path()
    if checkpoint is None:
        fail("no model checkpoint configured; set MELOMANIA_CHECKPOINT")
    config = WorkerConfig(
        checkpoint=checkpoint,
        database_url=settings.database_url,
        database_retry_s=settings.database_retry_s,
        data_dir=settings.data_dir,
        soundfont=settings.soundfont,
        threads=settings.threads,
        placement=resolve_placement(settings, device, dtype),  # a device it lacks: one line now, not at startup
    )
    url = settings.redis_url or "redis://127.0.0.1:6379/0"
    check_redis(url)  # one line, not arq's retries and traceback
    redis = RedisSettings.from_dsn(url)
    run_worker(WorkerSettings, redis_settings=redis, ctx={"config": config})


def prepare_bot_process(device: str | None = None, dtype: str | None = None):
    """What every bot process needs before it connects: a migrated database, and either the model
    (on `device`, in `dtype`, over the settings') and render tools (composing here) or a
    reachable Redis (workers compose; no model loaded)."""
    from sqlalchemy.exc import SQLAlchemyError

    from generator.device import PlacementError
    from storage.migrate import upgrade

    from .composer import Composer

    settings = load_settings()
    try:  # spelling, before anything: a Redis-mode bot loads no model, but a typo is still one
        settings = settings.model_copy(update=asdict(settings.placement(device, dtype)))
    except PlacementError as exc:
        fail(str(exc))
    try:
        upgrade(settings.database_url)
    except (SQLAlchemyError, OSError) as exc:
        fail(f"cannot open the database: {str(exc).splitlines()[0]}")
    if settings.redis_url:
        check_redis(settings.redis_url)
        return settings, Composer(redis_url=settings.redis_url)
    import torch

    # This thread runs the event loop; the runner composes on its own thread. Loading here with
    # torch's default threads leaves an OpenMP team on this thread too, and with two teams on two
    # cores libgomp sleeps between every op: a 600-event piece on 2 threads took 2.2 s, not 0.75.
    torch.set_num_threads(1)
    try:
        soundfont = check_render_tools(settings)
        _, loaded = load_configured_model(settings.model_copy(update={"threads": None}), None)
    except (GeneratorError, RenderError) as exc:
        fail(str(exc))
    return settings, Composer(loaded=loaded, soundfont=soundfont, threads=settings.threads)


def check_redis(url: str) -> None:
    """One line, not a traceback, when MELOMANIA_REDIS_URL is wrong or its server is down; the
    URL is not repeated (it may hold a password)."""
    import asyncio

    from redis.asyncio import Redis
    from redis.exceptions import RedisError

    async def ping() -> None:
        client = Redis.from_url(url, socket_connect_timeout=5)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except (RedisError, OSError, ValueError) as exc:
        fail(f"cannot reach Redis at MELOMANIA_REDIS_URL ({exc.__class__.__name__}); is redis-server running?")


def log_without(*secrets: str) -> None:
    """Log to stderr with `secrets` (a bot token, a webhook secret) replaced wherever a library prints them."""
    import logging

    class Redacted(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            text = super().format(record)
            for secret in filter(None, secrets):
                text = text.replace(secret, "<secret>")
            return text

    handler = logging.StreamHandler()
    handler.setFormatter(Redacted("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.INFO, handlers=[handler])


run_app = typer.Typer(help="Run a chat bot.", no_args_is_help=True)
app.add_typer(run_app, name="run")


@run_app.command("telegram")
def run_telegram(device: DeviceOption = None, dtype: DtypeOption = None) -> None:
    """Run the Telegram bot with MELOMANIA_TELEGRAM_TOKEN: long polling, or a webhook when
    MELOMANIA_TELEGRAM_WEBHOOK_URL is set; tracks are composed in this process, or by workers
    when MELOMANIA_REDIS_URL is set."""
    import asyncio

    settings = load_settings()
    token = bot_token(settings.telegram_token, "Telegram", TELEGRAM_TOKEN_SHAPE, TELEGRAM_LOOKS_LIKE, TELEGRAM_GET_ONE)

    from telegram import Bot
    from telegram.error import InvalidToken, NetworkError

    from bot.grammar import UsageError
    from bot.telegram import build_application, webhook_from
    from storage import Database, LocalArtifactStore

    secret = settings.telegram_webhook_secret.get_secret_value() if settings.telegram_webhook_secret else None
    try:  # a bad webhook setting is found before minutes of loading
        webhook = webhook_from(
            settings.telegram_webhook_url, settings.telegram_webhook_listen, settings.telegram_webhook_port, secret
        )
    except UsageError as exc:
        fail(str(exc))

    async def check_token() -> None:
        async with Bot(token) as bot:  # getMe: is the token good and Telegram reachable?
            await bot.get_me()

    try:  # before loading the model: a bad token is found in a second, not after minutes
        asyncio.run(check_token())
    except InvalidToken:  # its message repeats the token: never print it
        fail("Telegram rejected MELOMANIA_TELEGRAM_TOKEN; check it with @BotFather")
    except NetworkError as exc:
        fail(f"cannot reach Telegram ({exc.__class__.__name__}); check the network and try again")
    settings, composer = prepare_bot_process(device, dtype)

    log_without(token, webhook.secret_token if webhook else "")

    db = Database(settings.database_url, retry_for_s=settings.database_retry_s)
    store = LocalArtifactStore(settings.data_dir / "artifacts")
    runner = composer.backend(db, store, platforms=("telegram",))
    application = build_application(token, runner, db, store, limits=settings.limits())
    on_start = application.post_init  # announces commands, resumes delivering unfinished jobs

    async def post_init(application) -> None:
        await runner.start()  # first: it recovers the unfinished jobs the bot then re-attaches to
        if on_start is not None:
            await on_start(application)

    async def post_shutdown(application) -> None:
        await runner.stop()
        await db.dispose()

    application.post_init, application.post_shutdown = post_init, post_shutdown
    try:
        if webhook is None:
            application.run_polling(bootstrap_retries=3)
        else:
            application.run_webhook(**webhook.run_options(), bootstrap_retries=3)
    except InvalidToken:
        fail("Telegram rejected MELOMANIA_TELEGRAM_TOKEN; check it with @BotFather")
    except NetworkError as exc:
        fail(f"cannot reach Telegram ({exc.__class__.__name__}); check the network and try again")


# Discord syncs global commands slowly; a test guild gets them at once.
TestGuild = Annotated[
    int | None, typer.Option(help="sync Discord commands to this guild only [env: MELOMANIA_DISCORD_TEST_GUILD]")
]


@run_app.command("discord")
def run_discord(
    test_guild: TestGuild = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Run the Discord bot with MELOMANIA_DISCORD_TOKEN; tracks are composed in this process, or
    by workers when MELOMANIA_REDIS_URL is set."""
    import asyncio

    settings = load_settings()
    # its shape checked before anything loads: a typo is one line, not minutes of loading
    token = bot_token(settings.discord_token, "Discord", DISCORD_TOKEN_SHAPE, DISCORD_LOOKS_LIKE, DISCORD_GET_ONE)
    if test_guild is None:
        test_guild = settings.discord_test_guild

    import discord

    from bot.discord import build_client
    from storage import Database, LocalArtifactStore

    settings, composer = prepare_bot_process(device, dtype)

    log_without(token)

    async def serve() -> None:
        db = Database(settings.database_url, retry_for_s=settings.database_retry_s)
        store = LocalArtifactStore(settings.data_dir / "artifacts")
        runner = composer.backend(db, store, platforms=("discord",))
        await runner.start()
        try:
            async with build_client(runner, db, store, test_guild_id=test_guild, limits=settings.limits()) as client:
                await client.start(token)
        finally:
            await runner.stop()
            await db.dispose()

    try:
        asyncio.run(serve())
    except discord.LoginFailure:
        fail("Discord rejected MELOMANIA_DISCORD_TOKEN; check it in the developer portal")
    except (discord.GatewayNotFound, discord.ConnectionClosed, OSError) as exc:
        fail(f"cannot reach Discord ({exc.__class__.__name__}); check the network and try again")


TELEGRAM_TOKEN_SHAPE = r"\d+:[\w-]+"
TELEGRAM_LOOKS_LIKE = "123456:ABC-def… from @BotFather"
TELEGRAM_GET_ONE = "create a bot with @BotFather to get one"
DISCORD_TOKEN_SHAPE = r"[\w-]+\.[\w-]+\.[\w-]+"  # base64url user id . timestamp . HMAC
DISCORD_LOOKS_LIKE = "three dot-separated parts, from the Bot page of the Discord developer portal"
DISCORD_GET_ONE = "create a bot in the Discord developer portal to get one"


def bot_token(value: SecretStr | None, platform: str, shape: str, looks_like: str, get_one: str) -> str:
    """A bot token from the settings (the environment or .env), checked for its shape before
    anything connects; the error names the variable and where to set it, never the value."""
    import re

    var = f"MELOMANIA_{platform.upper()}_TOKEN"
    token = value.get_secret_value().strip() if value is not None else ""
    if not token:
        fail(f"no {platform} bot token: set {var} in the environment or in .env; {get_one}")
    if not re.fullmatch(shape, token):
        fail(f"{var} is not a bot token (it looks like {looks_like})")
    return token


@run_app.command("all")
def run_all(
    test_guild: TestGuild = None,
    device: DeviceOption = None,
    dtype: DtypeOption = None,
) -> None:
    """Run the Telegram bot (long polling) and the Discord bot in one process with
    MELOMANIA_TELEGRAM_TOKEN and MELOMANIA_DISCORD_TOKEN: one model and one in-process runner
    compose for both (or workers over Redis when MELOMANIA_REDIS_URL is set). Ctrl-C or SIGTERM
    stops both bots, then the runner."""
    import asyncio

    settings = load_settings()
    both = " (run all needs both bots' tokens)"
    telegram_token = bot_token(
        settings.telegram_token, "Telegram", TELEGRAM_TOKEN_SHAPE, TELEGRAM_LOOKS_LIKE, TELEGRAM_GET_ONE + both
    )
    discord_token = bot_token(
        settings.discord_token, "Discord", DISCORD_TOKEN_SHAPE, DISCORD_LOOKS_LIKE, DISCORD_GET_ONE + both
    )
    if test_guild is None:
        test_guild = settings.discord_test_guild
    if settings.telegram_webhook_url:
        fail("run all polls Telegram; unset MELOMANIA_TELEGRAM_WEBHOOK_URL, or run the bots apart (run telegram)")

    from .run_all import StartError, serve_both

    settings, composer = prepare_bot_process(device, dtype)
    log_without(telegram_token, discord_token)
    try:
        asyncio.run(serve_both(settings, composer, telegram_token, discord_token, test_guild))
    except StartError as exc:
        fail(str(exc))


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()

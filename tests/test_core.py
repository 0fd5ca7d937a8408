"""The command service (`bot.core`) on its own: a real SQLite database, a real job runner that
accepts jobs (and is never started, so composes nothing), and no chat library at all."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest
from conftest import runner_model

from bot.core import (
    CommandService,
    ComposeTrack,
    Origin,
    PageAsk,
    Rerender,
    SetFavourite,
    SettingsAsk,
    TrackAsk,
    Where,
    Who,
)
from bot.core.delivery import GroupProgress
from bot.grammar import GENRE_NAMES, RANGES, Compose, UsageError, parse
from bot.limits import Limits, RateLimiter
from bot.replies import LIMITED, REFUSED, SILENT, USAGE, Listing, Reply, Started, listing_text
from generator import SamplingParams
from generator import vocab as V
from jobs.api import JobEvent
from jobs.inprocess import InProcessRunner
from storage import Database, Job, LocalArtifactStore, Track
from storage.tracks import NewTrack, record_track, unpack_tokens
from storage.users import get_or_create_user

BOT = Path(__file__).resolve().parent.parent / "bot"
HERE = Where("telegram", "1", "telegram-chat:1", {"chat_id": 1})


@pytest.fixture
async def core(tmp_path):
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'core.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    runner = InProcessRunner(db, store, runner_model)  # accepts jobs, never composes them
    try:
        yield CommandService("telegram", runner, db, store)
    finally:
        await runner.stop()
        await db.dispose()


def asked(user: str = "1", key: str = "", where: Where = HERE) -> Origin:
    return Origin(Who("telegram", user, f"user {user}"), where, key)


def record_of(**sampling: Any) -> dict[str, Any]:
    """A track's sampling record as the runner keeps it: every value it was composed with."""
    return asdict(SamplingParams(**sampling))


async def stored_track(
    core: CommandService,
    owner: str = "1",
    temperature: float = 0.9,
    seed: int = 7,
    arrangement: str = "solo",
    sampling: dict[str, Any] | None = None,
) -> int:
    events = [V.VELOCITY + 20, 60, V.TIME_SHIFT + 49, V.NOTE_OFF + 60] * 20

    async def make(s):
        user = await get_or_create_user(s, "telegram", owner)
        new = NewTrack(
            genre="calm",
            model_id="tiny",
            checkpoint_sha256="0" * 64,
            seed=seed,
            sampling=record_of(temperature=temperature) if sampling is None else sampling,
            tokens=[V.genre_token("calm"), *events],
            max_seconds=5.0,
            duration_s=4.0,
            mp3_key=core.store.put(b"ID3", "mp3"),
            arrangement=arrangement,
        )
        return (await record_track(s, user, new)).id

    return await core.db.run(make)


async def job_requests(core: CommandService) -> list[dict]:
    from sqlalchemy import select

    return [job.request for job in await core.db.run(lambda s: s.scalars(select(Job).order_by(Job.id)))]


async def test_compose_without_a_genre_or_a_default_names_the_genres_and_starts_nothing(core):
    reply = await core.compose(ComposeTrack(asked(key="k1"), Compose()))
    assert isinstance(reply, Reply) and reply.kind == USAGE
    assert GENRE_NAMES in reply.text and reply.text.startswith("which genre?")
    with pytest.raises(UsageError, match="choose one of: " + GENRE_NAMES):
        parse("/compose polka")  # a genre nobody offers never reaches the service
    assert await job_requests(core) == []


async def test_the_same_key_twice_starts_one_job(core):
    first = await core.compose(ComposeTrack(asked(key="telegram:100"), Compose(genre="jazz", seconds=5)))
    again = await core.compose(ComposeTrack(asked(key="telegram:100"), Compose(genre="jazz", seconds=5)))
    assert isinstance(first, Started) and again == SILENT and again.silent
    [request] = await job_requests(core)
    assert request["idempotency_key"] == "telegram:100" and request["reply_to"] == {"chat_id": 1}


async def test_a_user_neither_sees_nor_favourites_nor_continues_another_users_track(core):
    track_id = await stored_track(core, owner="1")
    for attempt in (
        core.track(TrackAsk(asked("2"), track_id)),
        core.favourite(SetFavourite(asked("2"), track_id, True)),
        core.continue_track(TrackAsk(asked("2", key="k2"), track_id)),
    ):
        reply = await attempt
        assert isinstance(reply, Reply) and reply.kind == USAGE and "of yours or shared here" in reply.text
    assert (await core.page(PageAsk(asked("2"), "history"))).lines == []
    assert (await core.page(PageAsk(asked("2"), "favorites"))).lines == []
    assert await job_requests(core) == []

    mine = await core.favourite(SetFavourite(asked("1"), track_id, True))
    assert mine.text == "⭐ Added to your favourites" and mine.buttons[1][0].data == f"unfav:{track_id}"
    [line] = (await core.page(PageAsk(asked("1"), "favorites"))).lines
    assert line.startswith(f"#{track_id} Ambient")
    turned = await core.favourite(SetFavourite(asked("1"), track_id, None))  # a shared chat's ⭐: turned over
    assert turned.text == "Removed from your favourites"


async def test_a_track_shared_into_a_chat_is_readable_by_its_members_there_only(core):
    track_id = await stored_track(core, owner="1")
    group = Where("telegram", "-100", "telegram-chat:-100", {"chat_id": -100})
    await core.share_here(track_id, "-100")
    seen = await core.track(TrackAsk(asked("2", where=group), track_id))
    assert not isinstance(seen, Reply) and seen.track_id == track_id and seen.title == f"Ambient #{track_id}"
    assert isinstance(await core.track(TrackAsk(asked("2"), track_id)), Reply)  # not in their own chat


async def test_history_comes_a_page_at_a_time(core):
    ids = [await stored_track(core, seed=i) for i in range(12)]
    first = await core.page(PageAsk(asked(), "history", 1, 10))
    second = await core.page(PageAsk(asked(), "history", 2, 10))
    beyond = await core.page(PageAsk(asked(), "history", 3, 10))
    assert [int(line.split()[0][1:]) for line in first.lines] == ids[::-1][:10] and first.more
    assert [int(line.split()[0][1:]) for line in second.lines] == ids[1::-1] and not second.more
    assert beyond == Listing("history", 3, [])
    assert listing_text(beyond, {}) == "There is no page 3; try /history"
    assert listing_text(first, {}).splitlines()[-1] == "More: /history 2"


async def test_settings_are_kept_and_fill_in_a_compose(core):
    saved = await core.settings(SettingsAsk(asked(), {"genre": "jazz", "temperature": 0.7, "seconds": 59.6}))
    shown = await core.settings(SettingsAsk(asked()))
    assert saved.text.splitlines()[0] == "✅ Saved. Your defaults:" and shown.text.splitlines()[0] == "Your defaults:"
    assert (
        saved.text.splitlines()[1:]
        == shown.text.splitlines()[1:]
        == [
            "genre: jazz",
            "temperature: 0.7",
            "length: 60 s",
            "instrument: piano",
        ]
    )
    assert isinstance(await core.compose(ComposeTrack(asked(key="k"), Compose())), Started)
    [request] = await job_requests(core)
    assert (request["genre"], request["sampling"]["temperature"], request["seconds"]) == ("jazz", 0.7, 60)


async def test_a_track_recorded_before_a_sampling_value_existed_keeps_its_default_in_children(core):
    """A jazz track composed before `bass` existed was composed at 0; rerolled hotter, continued or
    played on another instrument, it stays at 0 whatever today's jazz preset lifts it to."""
    old = {k: v for k, v in record_of(temperature=0.9).items() if k != "bass"}
    track_id = await stored_track(core, seed=11, sampling=old)
    assert isinstance(await core.hotter(asked(key="h"), track_id), Started)
    assert isinstance(await core.rerender(Rerender(asked(key="r"), track_id, "rhodes")), Started)
    hotter, rerendered = await job_requests(core)
    assert hotter["sampling"]["bass"] == 0.0 and hotter["sampling"]["temperature"] == 1.0
    assert rerendered["sampling"]["bass"] == 0.0
    lifted = await stored_track(core, sampling=record_of(temperature=0.9, bass=0.75))
    assert isinstance(await core.hotter(asked(key="l"), lifted), Started)
    assert (await job_requests(core))[-1]["sampling"]["bass"] == 0.75


async def test_hotter_at_the_top_of_the_range_stays_there_and_cooler_at_the_bottom_too(core):
    temperature = RANGES["temperature"]
    hot = await stored_track(core, temperature=temperature.high)
    cold = await stored_track(core, temperature=temperature.low)
    assert isinstance(await core.hotter(asked(key="h"), hot), Started)
    assert isinstance(await core.cooler(asked(key="c"), cold), Started)
    hotter, cooler = await job_requests(core)
    assert hotter["sampling"]["temperature"] == temperature.high and hotter["lineage"] == "hotter"
    assert cooler["sampling"]["temperature"] == temperature.low and cooler["parent_track_id"] == cold


async def test_an_instrument_change_carries_the_tracks_own_notes_and_recipe(core):
    track_id = await stored_track(core, seed=11)  # on the piano
    for instrument, answer in (
        ("Piano", "is played on the piano already; pick another instrument"),
        ("vibrafone", "I don't know the instrument 'vibrafone'; did you mean: vibraphone?"),
    ):
        reply = await core.rerender(Rerender(asked(key=instrument), track_id, instrument))
        assert isinstance(reply, Reply) and reply.kind == USAGE and answer in reply.text, reply.text
    theirs = await core.rerender(Rerender(asked("2", key="theirs"), track_id, "organ"))
    assert theirs.kind == USAGE and "of yours or shared here" in theirs.text
    assert await job_requests(core) == []

    assert isinstance(await core.rerender(Rerender(asked(key="k"), track_id, "rhodes")), Started)
    [request] = await job_requests(core)
    parent = await core.db.run(lambda s: s.get(Track, track_id))
    assert request["render"] == {"tokens": unpack_tokens(parent.tokens), "model": "tiny", "checkpoint_sha256": "0" * 64}
    assert (request["instrument"], request["lineage"], request["parent_track_id"]) == (
        "electric piano",
        "instrument",
        track_id,
    )
    assert (request["seed"], request["seconds"]) == (11, 5.0)
    assert request["sampling"] == {k: v for k, v in record_of(temperature=0.9).items() if v is not None}
    assert request["primer"] == []  # no primer: a piano roll marks none


async def test_compose_asks_for_the_arrangement_typed_else_the_genres_own(core):
    for n, text in enumerate(("/compose classic band 5s", "/compose jazz 5s", "/compose jazz solo 5s")):
        assert isinstance(await core.compose(ComposeTrack(asked(key=f"k{n}"), parse(text))), Started)
    assert [r["arrangement"] for r in await job_requests(core)] == ["band", "band", "solo"]


async def test_children_keep_the_tracks_arrangement_and_a_continuation_takes_the_genres(core):
    track_id = await stored_track(core)  # calm, whose own arrangement is band, but this one is solo
    assert isinstance(await core.reroll(asked(key="reroll"), track_id), Started)
    assert isinstance(await core.rerender(Rerender(asked(key="inst"), track_id, "organ")), Started)
    assert isinstance(await core.continue_track(TrackAsk(asked(key="more"), track_id)), Started)
    assert [(r["lineage"], r["arrangement"]) for r in await job_requests(core)] == [
        ("reroll", "solo"),
        ("instrument", "solo"),
        ("continue", "band"),
    ]


async def test_an_arrangement_switch_carries_the_tracks_own_notes_and_recipe(core):
    track_id = await stored_track(core, seed=11, arrangement="band")
    shown = await core.track(TrackAsk(asked(), track_id))
    assert shown.arrangement == "band" and "· piano and band" in shown.caption
    for arrangement, answer in (
        ("band", "track #{} is played with its band already"),
        ("trio", "the arrangement is solo or band, not 'trio'"),
    ):
        reply = await core.rerender(Rerender(asked(key=arrangement), track_id, arrangement=arrangement))
        assert reply.kind == USAGE and answer.format(track_id) in reply.text, reply.text
    theirs = await core.rerender(Rerender(asked("2", key="theirs"), track_id, arrangement="solo"))
    assert theirs.kind == USAGE and "of yours or shared here" in theirs.text
    assert await job_requests(core) == []

    assert isinstance(await core.rerender(Rerender(asked(key="k"), track_id, arrangement="solo")), Started)
    [request] = await job_requests(core)
    parent = await core.db.run(lambda s: s.get(Track, track_id))
    assert request["render"]["tokens"] == unpack_tokens(parent.tokens)
    assert (request["arrangement"], request["instrument"], request["lineage"], request["parent_track_id"]) == (
        "solo",
        "piano",
        "arrangement",
        track_id,
    )
    assert (request["seed"], request["seconds"]) == (11, 5.0)
    assert request["sampling"] == {k: v for k, v in record_of(temperature=0.9).items() if v is not None}


async def test_a_user_over_the_rate_limit_is_told_when_to_come_back(core):
    core.limits = Limits(RateLimiter(1, 60.0), RateLimiter(5, 60.0))
    assert isinstance(await core.compose(ComposeTrack(asked(key="a"), Compose(genre="jazz"))), Started)
    refused = await core.compose(ComposeTrack(asked(key="b"), Compose(genre="jazz")))
    assert refused.kind == LIMITED and refused.text.startswith("easy there — you can compose again in ")
    assert len(await job_requests(core)) == 1


async def test_cancel_stops_the_users_job_and_then_has_nothing_to_stop(core):
    assert isinstance(await core.compose(ComposeTrack(asked(key="a"), Compose(genre="jazz"))), Started)
    assert (await core.cancel(Who("telegram", "2"))).text.startswith("Nothing to cancel")  # not theirs
    assert (await core.cancel(Who("telegram", "1"))).text == "✖️ Cancelled your track."
    assert (await core.cancel(Who("telegram", "1"))).text.startswith("Nothing to cancel")


def test_the_front_ends_load_neither_the_model_nor_the_runner_nor_a_worker():
    code = (
        "import sys, bot.core, bot.telegram, bot.discord\n"
        "print(sorted(m for m in ('torch', 'jobs.inprocess', 'arq.worker') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=BOT.parent)
    assert out.stdout.strip() == "[]"


def imported(path: Path) -> set[str]:
    """The top-level packages (and `jobs.x` modules) a file imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_only_the_command_service_touches_storage_the_database_or_the_jobs():
    adapters = [p for p in BOT.rglob("*.py") if BOT / "core" not in p.parents]
    assert {p.relative_to(BOT).parts[0] for p in adapters} >= {"telegram", "discord", "replies.py"}
    for path in adapters:
        bad = {n for n in imported(path) if n.split(".")[0] in ("storage", "sqlalchemy", "jobs")}
        assert not bad, f"{path.relative_to(BOT.parent)} imports {sorted(bad)}"
    core = [p for p in (BOT / "core").rglob("*.py")]
    assert any("storage" in imported(p) for p in core)


def test_a_compose_request_is_built_in_one_place():
    calls = [
        (path.relative_to(BOT.parent), node.lineno)
        for path in BOT.rglob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) == "ComposeRequest"
    ]
    assert len(calls) == 1 and calls[0][0] == Path("bot/core/recipes.py"), calls


def test_hotter_and_cooler_keep_to_the_grammars_temperature_range(monkeypatch):
    from bot.grammar import Range
    from bot.replies import child_temperature

    monkeypatch.setitem(RANGES, "temperature", Range(0.5, 1.5, example="1"))
    assert child_temperature("hotter", 1.5) == 1.5 and child_temperature("cooler", 0.5) == 0.5
    assert child_temperature("hotter", 1.0) == 1.1


async def test_count_starts_that_many_candidates_once_each_at_its_own_seed(core):
    started = await core.compose(ComposeTrack(asked(key="telegram:7"), Compose(genre="jazz", seconds=5, count=3)))
    assert isinstance(started, Started) and started.candidates and len(set(started.job_ids)) == 3
    again = await core.compose(ComposeTrack(asked(key="telegram:7"), Compose(genre="jazz", seconds=5, count=3)))
    assert again == SILENT  # a redelivered update starts the group once
    requests = await job_requests(core)
    assert [r["idempotency_key"] for r in requests] == ["telegram:7#1", "telegram:7#2", "telegram:7#3"]
    assert len({r["seed"] for r in requests}) == 3 and all(r["reply_to"] == {"chat_id": 1} for r in requests)
    seeded = Compose(genre="jazz", seed=2**31 - 2, count=3)
    assert isinstance(await core.compose(ComposeTrack(asked("2", key="telegram:8"), seeded)), Started)
    assert [r["seed"] for r in (await job_requests(core))[3:]] == [2**31 - 2, 2**31 - 1, 0]  # the given, then after it


async def test_candidates_cost_one_each_and_all_fit_or_none_start(core):
    core.limits = Limits(RateLimiter(3, 60.0), RateLimiter(20, 60.0))
    refused = await core.compose(ComposeTrack(asked(key="a"), Compose(genre="jazz", count=4)))
    assert refused.kind == LIMITED and "that's 4 tracks at once" in refused.text and "ask for fewer" in refused.text
    assert isinstance(await core.compose(ComposeTrack(asked(key="b"), Compose(genre="jazz", count=2))), Started)
    later = await core.compose(ComposeTrack(asked(key="c"), Compose(genre="jazz", count=2)))
    assert later.kind == LIMITED and later.text.startswith("easy there — you can compose again in ")
    assert len(await job_requests(core)) == 2

    core.limits = Limits()  # the runner's own cap: at most 4 on the way (none composes here)
    assert isinstance(await core.compose(ComposeTrack(asked(key="d"), Compose(genre="jazz", count=2))), Started)
    over = await core.compose(ComposeTrack(asked(key="e"), Compose(genre="jazz", count=3)))
    assert over.kind == REFUSED
    assert (
        over.text == "that's 3 tracks at once, but you may have 4 on the way and already have 4; ask for fewer, or wait"
    )
    assert len(await job_requests(core)) == 4  # none of the three was stored


async def test_only_the_asker_picks_a_candidate(core):
    track_id = await stored_track(core, owner="1")
    await core.share_here(track_id, "-100")  # a group's candidates are shared there
    group = Where("telegram", "-100", "telegram-chat:-100", {"chat_id": -100})
    other = await core.pick(TrackAsk(asked("2", where=group), track_id))
    assert other == Reply("only the person who asked for these can pick one", kind=USAGE)
    assert await core.pick(TrackAsk(asked("2", where=group), 999999)) == other  # as if it were someone's
    mine = await core.pick(TrackAsk(asked("1", where=group), track_id))
    assert not isinstance(mine, Reply) and mine.track_id == track_id


def test_a_groups_progress_is_one_line_for_all_of_it():
    progress = GroupProgress(3)
    for job_id in (1, 2, 3):
        progress.add(JobEvent(job_id, "queued", position=job_id + 1))
    assert progress.line() == "⏳ In the queue (#2)… (3 candidates)"
    progress.add(JobEvent(1, "running", done=100, total=400, eta_s=30.0))
    # 100 of 1200 tokens (the two waiting are expected as long), 1100 to go at 0.1 s a token
    assert progress.line() == "🎼 Composing ░░░░░░░░░░ 8% · ~110 s left · 0 of 3 ready"
    progress.add(JobEvent(1, "done", track_id=9))
    progress.add(JobEvent(2, "failed", reason="boom"))
    assert progress.line() == "🎼 Composing ▓▓▓▓▓░░░░░ 50% · ~40 s left · 1 of 3 ready"

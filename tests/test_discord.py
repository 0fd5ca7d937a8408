"""The Discord bot end to end: the real discord.py client, command tree and view dispatch, its REST
calls going to a loopback stub, interactions delivered as the gateway would; a tiny random model
composes through the in-process runner into SQLite."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sqlite3
import subprocess
import typing
from dataclasses import dataclass

import discord
import discord.gateway
import pytest
import yarl
from conftest import runner_model
from discord import ui
from discord_stub import CHANNEL_ID, GUILD_ID, DiscordApiStub
from patterns import MISSING_ID, examples
from sqlalchemy import func, select

from bot.discord import MelomaniaClient, build_client
from bot.discord.client import DYNAMIC_ITEMS, claimed, template_of
from bot.limits import Limits, RateLimiter
from bot.replies import OUT_OF_DATE, PICK_ONE
from generator import vocab as V
from generator.tokenizer import Note, notes_to_midi
from jobs.api import ComposeRequest, primer_from_midi
from jobs.inprocess import InProcessRunner, RunnerSettings
from storage import Database, Favorite, Job, LocalArtifactStore, Share, Track, User
from storage.favorites import add_favorite
from storage.tracks import NewTrack, record_track, unpack_tokens
from storage.users import get_or_create_user

TOKEN = "not-a-real-discord-token"
TEST_GUILD = 910000000000000001
OTHER_CHANNEL = 920000000000000077


@dataclass
class Env:
    stub: DiscordApiStub
    db: Database
    store: LocalArtifactStore
    runner: InProcessRunner
    client: MelomaniaClient

    def dispatch(self, payload: dict) -> dict:
        self.client._connection.parse_interaction_create(payload)
        return payload

    async def restart(self) -> None:
        """A fresh client on the same database, as after a deploy: no views kept in memory."""
        await self.client.close()
        self.client = await logged_in(self)

    async def count(self, table, *where) -> int:
        return await self.db.run(lambda s: s.scalar(select(func.count()).select_from(table).where(*where)))

    async def track(self, track_id: int) -> Track:
        return await self.db.run(lambda s: s.get(Track, track_id))


async def logged_in(env: Env, runner: InProcessRunner | None = None) -> MelomaniaClient:
    client = build_client(runner or env.runner, env.db, env.store, test_guild_id=TEST_GUILD)
    await client.login(TOKEN)  # the stub's /users/@me and /oauth2/applications/@me; setup_hook syncs the tree
    return client


async def on_gateway(env: Env, runner: InProcessRunner) -> MelomaniaClient:
    """A fresh client that logs in and holds the stub's gateway, as `run discord` starts one; READY
    makes discord.py dispatch on_ready, where the bot resumes delivering."""
    client = await logged_in(env, runner)
    asyncio.get_running_loop().create_task(client.connect(reconnect=False))  # ends when the client closes
    await asyncio.wait_for(client.wait_until_ready(), 30)
    return client


def new_runner(env: Env) -> InProcessRunner:
    return InProcessRunner(env.db, env.store, runner_model, RunnerSettings(progress_interval_s=0.05))


async def eventually(check, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        if value := await check():
            return value
        await asyncio.sleep(0.05)
    raise AssertionError(f"{check} never held within {timeout} s")


@pytest.fixture
async def env(tmp_path, monkeypatch):
    stub = DiscordApiStub().start()
    monkeypatch.setattr(discord.http.Route, "BASE", stub.base_url)
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(stub.gateway_url))
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    runner = InProcessRunner(db, store, runner_model, RunnerSettings(progress_interval_s=0.05))
    await runner.start()
    env = Env(stub, db, store, runner, None)  # type: ignore[arg-type]
    env.client = await logged_in(env)
    try:
        yield env
    finally:
        await env.client.close()
        await runner.stop()
        await db.dispose()
        stub.stop()


async def stored_track(env: Env, owner: str = "1", audio: bytes = b"ID3 not really an mp3") -> int:
    """A private track as if composed earlier, without composing."""
    mp3 = env.store.put(audio, "mp3")
    events = [V.VELOCITY + 20, 60, V.TIME_SHIFT + 49, V.NOTE_OFF + 60] * 20

    async def make(s):
        user = await get_or_create_user(s, "discord", owner)
        new = NewTrack(
            genre="calm",
            model_id="tiny",
            checkpoint_sha256="0" * 64,
            seed=7,
            sampling={"temperature": 0.9},
            tokens=[V.genre_token("calm"), *events],
            max_seconds=5.0,
            duration_s=4.0,
            mp3_key=mp3,
        )
        return (await record_track(s, user, new)).id

    return await env.db.run(make)


def track_id_of(post) -> int:
    return int(post.custom_ids[0].split(":")[1])


def track_custom_ids(track_id: int, toggle: str = "solo") -> list[str]:
    """A posted track's components, row by row: 🔁 🔥 ❄️ 🎸 (to `toggle`) / ⭐ ➕ 📤 🎛 / 🎹."""
    first, second = ("reroll", "hotter", "cooler"), ("fav", "continue", "share", "remix", "instrument")
    return [*(f"{a}:{track_id}" for a in first), f"arr:{track_id}:{toggle}", *(f"{a}:{track_id}" for a in second)]


async def compose_one(env: Env, **options) -> tuple[dict, object]:
    """/compose in the test channel; the posted track's call."""
    return await compose_one_from(env, env.stub.command("compose", **options))


async def compose_one_from(env: Env, payload: dict) -> tuple[dict, object]:
    before = len(tracks_shown(env))
    env.dispatch(payload)
    posts = await tracks_shown(env, before + 1)
    return posts[-1].response, posts[-1]


def tracks_shown(env: Env, count: int | None = None):
    """The tracks shown through interactions: each is its progress response, edited into the track
    (without `count`: those so far; with it, awaitable until there are that many)."""
    if count is None:
        return [c for c in env.stub.calls_to("edit_original") if c.files]
    return env.stub.wait_for("edit_original", count=count, timeout=60, files=True)


async def test_compose_defers_edits_with_progress_and_posts_one_playable_mp3(env, tmp_path):
    interaction = env.dispatch(env.stub.command("compose", genre="calm", seconds=5))
    [post] = await tracks_shown(env, 1)
    [callback] = env.stub.calls_to("callback")
    assert callback.match["id"] == interaction["id"] and callback.payload["type"] == 5  # deferred, thinking
    edits = env.stub.calls_to("edit_original")
    assert edits[-1] is post and all(e.match["token"] == interaction["token"] for e in edits)
    assert any(e.content.startswith(("⏳", "🎼")) for e in edits[:-1])
    assert not post.content  # the progress text is gone: the message is the track now
    roll = [name for name in post.files if name.endswith(".png")]
    assert len(roll) == 1 and post.payload["embeds"][0]["image"]["url"] == f"attachment://{roll[0]}"

    mp3s = [name for name in post.files if name.endswith(".mp3")]
    assert len(mp3s) == 1 and {n.rsplit(".", 1)[1] for n in post.files} <= {"mp3", "mid", "png"}
    path = tmp_path / "sent.mp3"
    path.write_bytes(post.files[mp3s[0]])
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration", "-of", "json", str(path)],
        capture_output=True,
        text=True,
        check=True,
    )
    fmt = json.loads(probe.stdout)["format"]
    assert fmt["format_name"] == "mp3" and float(fmt["duration"]) > 0

    track_id = track_id_of(post)
    assert post.custom_ids == track_custom_ids(track_id)  # ambient comes with its band: 🎸 offers solo
    assert post.payload["embeds"][0]["title"].startswith(f"Ambient #{track_id}")
    assert await env.count(Share, Share.track_id == track_id, Share.chat_id == str(CHANNEL_ID)) == 1
    await asyncio.sleep(0.3)  # one message per track: the progress response became it, nothing else was posted
    assert not env.stub.calls_to("followup") and not env.stub.calls_to("channel_message")
    assert len(tracks_shown(env)) == 1 and await env.count(Job) == 1
    [sync] = env.stub.calls_to("sync")
    assert f"/guilds/{TEST_GUILD}/" in sync.path
    compose = next(c for c in sync.payload["_list"] if c["name"] == "compose")
    options = {o["name"]: o for o in compose["options"]}
    assert [c["value"] for c in options["genre"]["choices"]] == ["classic", "jazz", "calm", "pop"]
    assert options["temperature"]["min_value"] == 0.1 and options["seconds"]["max_value"] == 180
    assert options["instrument"]["autocomplete"] is True
    assert [c["value"] for c in options["arrangement"]["choices"]] == ["solo", "band"]


def first_calls(stub: DiscordApiStub, interaction: dict) -> list[str]:
    """The names of the calls the bot made for one interaction (its callback, its webhook), in order."""
    return [
        c.name
        for c in stub.calls
        if c.match.get("id") == interaction["id"] or c.match.get("token") == interaction["token"]
    ]


async def test_count_posts_the_candidates_as_one_message_and_keeping_one_turns_it_into_that_track(env):
    env.dispatch(env.stub.command("compose", genre="calm", seconds=5, count=3))
    [post] = await tracks_shown(env, 1)
    assert sorted(name.split("-")[0] for name in post.files) == ["1", "2", "3"]
    assert all(name.endswith(".mp3") for name in post.files)
    ids = [int(i.split(":")[1]) for i in post.custom_ids]
    labels = [c["label"] for row in post.payload["components"] for c in row["components"]]
    assert post.custom_ids == [f"keep:{t}" for t in ids] and labels == ["Keep 1", "Keep 2", "Keep 3"]
    assert post.content.splitlines()[0] == PICK_ONE
    assert len({(await env.track(t)).seed for t in ids}) == 3
    await asyncio.sleep(0.3)  # one message: the progress response became the candidates
    assert not env.stub.calls_to("followup") and not env.stub.calls_to("channel_message")
    assert await env.count(Job) == await env.count(Track) == 3

    env.dispatch(env.stub.press(f"keep:{ids[1]}", post.response, user_id=2))  # someone else's pick
    [refused] = await env.stub.wait_for("followup")
    assert refused.ephemeral and refused.content == "🤔 only the person who asked for these can pick one"
    press = env.dispatch(env.stub.press(f"keep:{ids[1]}", post.response))
    kept = (await tracks_shown(env, 2))[-1]
    callback = next(c for c in env.stub.calls_to("callback") if c.match["id"] == press["id"])
    assert callback.payload["type"] == 6 and kept.match["token"] == press["token"]  # deferred, then edited
    assert kept.custom_ids == track_custom_ids(ids[1]) and not kept.content
    assert kept.payload["embeds"][0]["title"].startswith(f"Ambient #{ids[1]}")
    assert {name.rsplit(".", 1)[1] for name in kept.files} == {"mp3", "mid", "png"}
    assert await env.count(Track) == 3  # the others stay in history


async def test_count_out_of_range_is_refused_naming_the_range(env):
    for count in (5, 0):  # Discord checks the range itself; a forged payload meets ours
        env.dispatch(env.stub.command("compose", genre="calm", count=count))
    replies = await env.stub.wait_for_replies(2)
    # the two are answered concurrently, in either order
    assert sorted(replies) == sorted(f"🤔 count must be from 1 to 4, not {c} (for example count=3)" for c in (5, 0))
    assert await env.count(Job) == 0


async def test_every_interaction_that_does_work_is_deferred_before_anything_else(env, tmp_path):
    jobs_at_callback: dict[str, int] = {}

    def note(call) -> None:  # in the stub's thread, as the callback arrives: what the bot had stored by then
        if call.name == "callback":
            with sqlite3.connect(tmp_path / "bot.db") as db:
                jobs_at_callback[call.match["id"]] = db.execute("select count(*) from jobs").fetchone()[0]

    env.stub.on_call = note
    composed = env.stub.command("compose", genre="calm", seconds=5)
    message, post = await compose_one_from(env, composed)
    track_id = track_id_of(post)
    assert jobs_at_callback[composed["id"]] == 0  # deferred before the job was stored
    channel = env.stub.channel(OTHER_CHANNEL, "elsewhere", (1 << 51) - 1)
    others = [
        env.stub.press(f"reroll:{track_id}", message),
        env.stub.press(f"fav:{track_id}", message),
        env.stub.press(f"share:{track_id}", message),
        env.stub.command("history"),
        env.stub.command("settings", seconds=6),
        env.stub.command("cancel", user_id=4),
        env.stub.command("share", track=track_id, channel=channel, channels=[channel]),
        env.stub.command("continue", track=await stored_track(env, owner="2")),  # refused, after deferring
    ]
    for payload in others:
        env.dispatch(payload)
    reroll = others[0]

    async def all_answered() -> bool:
        tokens = {c.match["token"] for c in env.stub.calls_to("followup")}
        return all(p["token"] in tokens for p in others[1:]) and await env.count(Job) == 2

    await eventually(all_answered, timeout=60)
    assert jobs_at_callback[reroll["id"]] == 1
    for payload in [composed, *others]:
        calls = first_calls(env.stub, payload)
        assert calls and calls[0] == "callback", (payload["data"], calls)
        [callback] = [c for c in env.stub.calls_to("callback") if c.match["id"] == payload["id"]]
        assert callback.payload["type"] == 5, payload["data"]  # deferred, "thinking…"
        assert callback.ephemeral == (payload not in (composed, reroll, others[-1])), payload["data"]


async def test_hotter_and_cooler_buttons_compose_children_for_whoever_pressed(env):
    message, post = await compose_one(env, genre="calm", seconds=5, temperature=0.8)
    parent_id = track_id_of(post)
    env.dispatch(env.stub.press(f"hotter:{parent_id}", message, user_id=2))  # someone else in the channel
    env.dispatch(env.stub.press(f"cooler:{parent_id}", message, user_id=1))
    posts = await tracks_shown(env, 3)
    children = [await env.track(track_id_of(p)) for p in posts[1:]]
    by_lineage = {c.lineage: c for c in children}
    assert set(by_lineage) == {"hotter", "cooler"}
    parent = await env.track(parent_id)
    for lineage, temperature in (("hotter", 0.9), ("cooler", 0.7)):
        child = by_lineage[lineage]
        assert child.parent_id == parent_id and child.genre == parent.genre == "calm"
        assert child.sampling["temperature"] == pytest.approx(temperature)
    assert by_lineage["hotter"].owner_id != parent.owner_id == by_lineage["cooler"].owner_id


async def test_favourite_button_in_a_channel_records_a_favourite_and_takes_it_back(env):
    message, post = await compose_one(env, genre="calm", seconds=5)
    track_id = track_id_of(post)
    env.dispatch(env.stub.press(f"fav:{track_id}", message, user_id=3))  # a listener in the channel
    callbacks = await env.stub.wait_for("callback", count=2)
    assert callbacks[-1].ephemeral and callbacks[-1].payload["type"] == 5  # deferred privately, then answered
    replies = await env.stub.wait_for_replies(1)
    assert "Added to your favourites" in replies[-1]
    assert await env.count(Favorite, Favorite.track_id == track_id) == 1
    # The button is everyone's and shows no state, so the same button takes it back.
    env.dispatch(env.stub.press(f"fav:{track_id}", message, user_id=3))
    replies = await env.stub.wait_for_replies(2)
    assert "Removed from your favourites" in replies[-1]
    assert await env.count(Favorite, Favorite.track_id == track_id) == 0


async def test_a_button_pressed_after_a_restart_still_works(env):
    message, post = await compose_one(env, genre="calm", seconds=5)
    track_id = track_id_of(post)
    await env.restart()
    env.dispatch(env.stub.press(f"cooler:{track_id}", message))
    posts = await tracks_shown(env, 2)
    child = await env.track(track_id_of(posts[-1]))
    assert child.parent_id == track_id and child.lineage == "cooler"


async def test_share_records_a_row_and_needs_permission_to_post(env):
    track_id = await stored_track(env)
    env.stub.forbidden_channels.add(OTHER_CHANNEL + 1)
    everything = (1 << 51) - 1
    attempts = [
        (OTHER_CHANNEL, everything, "Shared"),
        (OTHER_CHANNEL + 1, everything, "not allowed to post"),  # the bot may not post there
        (OTHER_CHANNEL + 2, 1 << 10, "can't post files"),  # the user may only view it
    ]
    for n, (channel_id, permissions, answer) in enumerate(attempts, 1):
        channel = env.stub.channel(channel_id, "elsewhere", permissions)
        env.dispatch(env.stub.command("share", track=track_id, channel=channel, channels=[channel]))
        replies = await env.stub.wait_for_replies(n)
        assert answer in replies[-1], replies
    posted, refused = env.stub.calls_to("channel_message")
    assert refused.path == f"/channels/{OTHER_CHANNEL + 1}/messages" and refused.response["code"] == 50013
    assert posted.path == f"/channels/{OTHER_CHANNEL}/messages" and any(f.endswith(".mp3") for f in posted.files)
    assert await env.count(Share, Share.track_id == track_id) == 1


BAD_INPUT = [
    ({"genre": "calm", "temperature": 5.0}, "temperature must be from 0.1 to 2"),  # forged: Discord checks this
    ({"genre": "calm", "top_k": 9999}, "top_k must be from 0 to 200"),
    ({"genre": "calm", "instrument": "kazoo"}, "don't know the instrument"),  # autocomplete is only a hint
    ({"genre": "polka"}, "'polka' is not one of the choices"),  # discord.py checks choices itself
    ({}, "which genre?"),
]


async def test_bad_input_gets_an_ephemeral_answer_and_composes_nothing(env):
    for options, _ in BAD_INPUT:
        env.dispatch(env.stub.command("compose", **options))
    someone_elses = await stored_track(env, owner="2")
    env.dispatch(env.stub.command("continue", track=someone_elses))
    env.dispatch(env.stub.command("continue", track=999))
    channel = env.stub.channel(5, "x", 0)
    env.dispatch(env.stub.command("share", track=someone_elses, channel=channel, channels=[channel]))
    texts = await env.stub.wait_for_replies(len(BAD_INPUT) + 3)
    for _, answer in BAD_INPUT:
        assert any(answer in t for t in texts), answer
    assert sum("of yours or shared here" in t for t in texts) == 3 and any("no track #999 " in t for t in texts)
    # what needs no database is answered at once; the rest is deferred first, then answered privately
    callbacks = env.stub.calls_to("callback")
    assert len([c for c in callbacks if c.payload["type"] == 4 and c.ephemeral]) == len(BAD_INPUT) - 1
    assert all(f.ephemeral for f in env.stub.calls_to("followup"))
    await asyncio.sleep(0.2)
    assert await env.count(Job) == 0 and not any(f.files for f in env.stub.calls_to("followup"))


async def test_commands_work_in_a_dm(env):
    env.dispatch(env.stub.command("help", dm=True))
    [callback] = await env.stub.wait_for("callback")
    assert "/compose" in callback.payload["data"]["content"] and callback.ephemeral


def midi_file(notes: int = 24) -> bytes:
    """A small standard MIDI file: a rising and falling line."""
    out = io.BytesIO()
    notes_to_midi([Note(i * 25, i * 25 + 20, 60 + (i % 7), 80) for i in range(notes)]).write(out)
    return out.getvalue()


async def test_continue_composes_from_an_attached_midi_file_in_the_named_or_default_genre(env):
    env.dispatch(env.stub.command("settings", genre="pop", seconds=5))
    await env.stub.wait_for_replies(1)
    data = midi_file()
    named, default = env.stub.attachment(data, "mine.mid"), env.stub.attachment(data, "again.mid")
    env.dispatch(env.stub.command("continue", midi=named, genre="jazz"))
    await tracks_shown(env, 1)
    env.dispatch(env.stub.command("continue", midi=default))
    posts = await tracks_shown(env, 2)

    primer = list(primer_from_midi(data))
    for post, attachment, genre in zip(posts, (named, default), ("jazz", "pop")):
        assert any(name.endswith(".mp3") for name in post.files)
        track = await env.track(track_id_of(post))
        assert (track.genre, track.lineage, track.parent_id) == (genre, "continue", None)
        assert track.primer_ref == f"discord-attachment:{attachment['id']}" and track.max_seconds == 5
        assert unpack_tokens(track.tokens)[1 : 1 + len(primer)] == primer  # composed on from the file's notes
        job = await env.db.run(lambda s, t=track.id: s.scalar(select(Job).where(Job.track_id == t)))
        assert job.request["primer"] == primer
    served = [c.match["id"] for c in env.stub.calls_to("attachment")]
    assert sorted(served) == sorted([named["id"], default["id"]])  # each read once, through its URL
    deferrals = [c.match["id"] for c in env.stub.calls_to("callback") if c.payload["type"] == 5][1:]  # not /settings
    calls = [(c.name, c.match.get("id")) for c in env.stub.calls]
    for interaction_id, attachment in zip(deferrals, (named, default), strict=True):
        # deferred before the download: a slow CDN can't make the bot miss Discord's 3 seconds
        assert calls.index(("callback", interaction_id)) < calls.index(("attachment", attachment["id"]))
    [sync] = env.stub.calls_to("sync")
    command = next(c for c in sync.payload["_list"] if c["name"] == "continue")
    options = {o["name"]: o for o in command["options"]}
    assert options["midi"]["type"] == 11 and not any(o.get("required") for o in command["options"])


async def test_continue_refuses_bad_or_missing_input_privately_before_composing(env):
    data = midi_file()
    track_id = await stored_track(env)
    oversized = env.stub.attachment(data, "huge.mid", size=5_000_000)
    expired = env.stub.attachment(data, "gone.mid", served=False)
    at_once = [  # found without downloading anything: answered instead of deferring
        ({}, "give `track:` (a track number, as in #42) or attach a MIDI file as `midi:`"),
        ({"track": track_id, "midi": env.stub.attachment(data)}, "give `track:` or `midi:`, not both"),
        ({"track": track_id, "genre": "jazz"}, "`genre:` is for an attached MIDI file"),
        ({"midi": oversized, "genre": "jazz"}, "that file is 5.0 MB; attach a MIDI file up to 1 MB"),
    ]
    after_download = [  # found in the database or once the file is read, after deferring: a private follow-up
        ({"midi": env.stub.attachment(data)}, "which genre should it continue in? choose one of: classic, jazz"),
        ({"midi": env.stub.attachment(b"ID3 an mp3", "song.mp3"), "genre": "jazz"}, "not a MIDI file"),
        ({"midi": env.stub.attachment(b"MThd\x00\x00\x00\x06junk"), "genre": "jazz"}, "ends inside its header"),
        ({"midi": expired, "genre": "jazz"}, "couldn't download that file; attach it again"),
    ]
    for options, _ in at_once + after_download:
        env.dispatch(env.stub.command("continue", **options))
    callbacks = await env.stub.wait_for("callback", count=len(at_once) + len(after_download))
    answered = [c for c in callbacks if c.payload["type"] == 4]
    assert len(answered) == len(at_once) and all(c.ephemeral for c in answered)
    texts = [c.payload["data"]["content"] for c in answered]
    for _, answer in at_once:
        assert sum(answer in t for t in texts) == 1, (answer, texts)

    deferred = {c.match["token"] for c in callbacks if c.payload["type"] == 5}
    followups = await env.stub.wait_for("followup", count=len(after_download))
    assert {f.match["token"] for f in followups} == deferred and all(f.ephemeral for f in followups)
    for _, answer in after_download:
        assert sum(answer in f.content for f in followups) == 1, (answer, [f.content for f in followups])
    # the public "thinking…" placeholder is resolved and removed, so the answer stays private
    deleted = await env.stub.wait_for("delete_original", count=len(after_download))
    assert {d.match["token"] for d in deleted} == deferred
    assert oversized["id"] not in [c.match["id"] for c in env.stub.calls_to("attachment")]  # never downloaded
    await asyncio.sleep(0.2)
    assert await env.count(Job) == 0 and not any(f.files for f in env.stub.calls_to("followup"))


async def test_rate_limits_answer_privately_for_every_composing_action_and_compose_nothing(env):
    env.client.limits = Limits(RateLimiter(1, 60.0), RateLimiter(2, 60.0))  # 1 per user, 2 per channel
    message, post = await compose_one(env, genre="calm", seconds=5)
    track_id = track_id_of(post)
    refused_for_ada = [
        env.stub.command("compose", genre="jazz", seconds=5),
        env.stub.command("compose", genre="jazz", seconds=5, dm=True),  # the user's budget follows them
        env.stub.command("continue", track=track_id),
        env.stub.command("continue", midi=env.stub.attachment(midi_file()), genre="pop"),
        *(env.stub.press(f"{action}:{track_id}", message) for action in ("reroll", "hotter", "cooler", "continue")),
    ]
    for payload in refused_for_ada:
        env.dispatch(payload)
    replies = await env.stub.wait_for_replies(len(refused_for_ada))
    assert len(replies) == len(refused_for_ada)
    assert all(r.startswith("⏳ easy there — you can compose again in ") for r in replies), replies
    assert all("(1 track per 60 s each)" in r for r in replies)

    env.dispatch(env.stub.command("compose", genre="calm", seconds=5, user_id=2))  # the channel's second
    await tracks_shown(env, 2)
    env.dispatch(env.stub.command("compose", genre="calm", seconds=5, user_id=3))  # the channel's third
    replies = await env.stub.wait_for_replies(len(refused_for_ada) + 1)
    assert replies[-1].startswith("⏳ this chat is composing a lot — try again in ")
    # every composing action is deferred before the limits are looked up, so each refusal is a private follow-up
    refusals = [f for f in env.stub.calls_to("followup") if f.content.startswith("⏳")]
    assert len(refusals) == len(refused_for_ada) + 1 and all(f.ephemeral for f in refusals)
    await asyncio.sleep(0.3)
    assert await env.count(Job) == 2 and len(tracks_shown(env)) == 2


async def test_a_rate_limited_track_upload_is_retried_by_discord_py_and_shown_once(env):
    env.stub.flood["edit_original+files"] = 1  # Discord answers the first upload of the track 429
    env.dispatch(env.stub.command("compose", genre="calm", seconds=5))
    calls = await tracks_shown(env, 2)
    assert calls[0].response["retry_after"] > 0 and not calls[0].response.get("id")
    assert any(name.endswith(".mp3") for name in calls[1].files) and calls[1].response["id"]
    await asyncio.sleep(0.5)
    assert len(tracks_shown(env)) == 2 and await env.count(Job) == 1 and not env.stub.calls_to("followup")


def test_run_discord_without_a_token_is_a_one_line_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from melomania.cli import app

    monkeypatch.chdir(tmp_path)  # a .env of the developer's is not read
    monkeypatch.delenv("MELOMANIA_DISCORD_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["run", "discord"])
    assert (
        result.exit_code == 2
        and "no Discord bot token: set MELOMANIA_DISCORD_TOKEN in the environment or in .env" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1


def test_run_discord_with_a_malformed_token_is_a_one_line_error_before_anything_loads(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from melomania.cli import app

    malformed = "secret-but-not-a-token"
    monkeypatch.chdir(tmp_path)  # a .env of the developer's is not read
    monkeypatch.setenv("MELOMANIA_DISCORD_TOKEN", malformed)
    monkeypatch.setenv("MELOMANIA_CHECKPOINT", "/nonexistent/checkpoint.pt")  # loading it would be another error
    result = CliRunner().invoke(app, ["run", "discord"])
    assert result.exit_code == 2 and "MELOMANIA_DISCORD_TOKEN is not a bot token" in result.output
    assert "three dot-separated parts" in result.output and malformed not in result.output
    assert len(result.output.strip().splitlines()) == 1


async def test_jobs_left_unfinished_by_a_restart_are_posted_into_their_channel_once(env):
    await env.client.close()
    idle = new_runner(env)  # never started: accepts jobs and never composes, like a process that dies
    env.client = await logged_in(env, idle)
    env.dispatch(env.stub.command("compose", genre="calm", seconds=5))
    await env.stub.wait_for("callback")

    async def stored() -> list[Job]:  # the interaction is deferred before its job is stored
        return list(await env.db.run(lambda s: s.scalars(select(Job))))

    [job] = await eventually(stored)
    assert job.request["reply_to"] == {"channel_id": CHANNEL_ID, "guild_id": GUILD_ID}
    await idle.submit(ComposeRequest("discord", "9", "pop", seconds=2))  # knows no channel: nowhere to post
    await env.client.close()
    await idle.stop()
    assert not env.stub.calls_to("channel_message") and not env.stub.calls_to("followup")

    runner = new_runner(env)
    await runner.start()  # a fresh process on the same database: it recovers both jobs
    try:
        env.client = await on_gateway(env, runner)
        [post] = await env.stub.wait_for("channel_message", timeout=60)
        assert post.path == f"/channels/{CHANNEL_ID}/messages"
        assert post.content == "<@1>" and post.payload["allowed_mentions"]["users"] == [1]
        assert [n.rsplit(".", 1)[1] for n in post.files].count("mp3") == 1
        track_id = track_id_of(post)
        assert post.custom_ids[0] == f"reroll:{track_id}" and (await env.track(track_id)).genre == "calm"
        delivered = await eventually(
            lambda: env.db.run(lambda s: s.scalar(select(Job.delivered_at).where(Job.id == job.id)))
        )
        assert delivered is not None
        assert await env.count(Share, Share.track_id == track_id, Share.chat_id == str(CHANNEL_ID)) == 1

        await env.client.close()  # and once more: the receipt keeps it from being posted again
        env.client = await on_gateway(env, runner)
        await asyncio.sleep(1.5)
        assert len(env.stub.calls_to("channel_message")) == 1 and not env.stub.calls_to("followup")
        assert len(env.stub.calls_to("identify")) == 2
    finally:
        await env.client.close()
        await runner.stop()


async def test_a_track_larger_than_the_channel_allows_is_explained_not_posted_in_part(env):
    payload = env.stub.command("compose", genre="calm", seconds=5)
    payload["attachment_size_limit"] = 8_000  # smaller than the MP3, larger than its MIDI
    env.dispatch(payload)

    async def explained():
        return [e for e in env.stub.calls_to("edit_original") if "attachment limit" in e.content]

    [edit] = await eventually(explained, timeout=60)
    assert edit.content.startswith("⚠️ track #") and "over this channel's 8 KB attachment limit" in edit.content
    assert not env.stub.calls_to("followup") and not env.stub.calls_to("channel_message")  # no MIDI alone
    [job] = list(await env.db.run(lambda s: s.scalars(select(Job))))
    await eventually(lambda: env.db.run(lambda s: s.scalar(select(Job.delivered_at).where(Job.id == job.id))))


async def test_a_track_discord_refuses_is_explained_in_the_response(env):
    env.stub.errors["edit_original+files"] = (413, {"message": "Request entity too large", "code": 40005})
    env.dispatch(env.stub.command("compose", genre="calm", seconds=5))

    async def explained():
        return [e for e in env.stub.calls_to("edit_original") if e.content.startswith("⚠️")]

    [edit] = await eventually(explained, timeout=60)
    assert "couldn't post track #" in edit.content and "larger than this channel accepts" in edit.content
    assert env.stub.calls_to("edit_original")[-1] is edit  # not left at the refused upload
    assert not env.stub.calls_to("channel_message") and not env.stub.calls_to("followup")


@pytest.mark.parametrize(
    "error",
    [(404, {"message": "Unknown Webhook", "code": 10015}), (401, {"message": "Invalid Webhook Token", "code": 50027})],
)
async def test_an_expired_interaction_token_posts_the_track_into_the_channel(env, error):
    env.stub.errors["edit_original+files"] = error  # the job outlived the interaction's 15 minutes
    env.dispatch(env.stub.command("compose", genre="calm", seconds=5, user_id=5))
    [post] = await env.stub.wait_for("channel_message", timeout=60)
    assert post.path == f"/channels/{CHANNEL_ID}/messages" and post.content == "<@5>"
    mp3 = [name for name in post.files if name.endswith(".mp3")]
    assert len(mp3) == 1 and len(post.files[mp3[0]]) > 1000  # the whole file, though the failed upload read it
    assert len(tracks_shown(env)) == 1 and not env.stub.calls_to("followup")


async def test_buttons_pressed_by_someone_who_cannot_post_here_compose_nothing(env):
    message, post = await compose_one(env, genre="calm", seconds=5)
    track_id = track_id_of(post)
    read_only = ((1 << 51) - 1) & ~(1 << 11)  # everything but SEND_MESSAGES
    for action in ("reroll", "hotter", "cooler", "continue"):
        env.dispatch(env.stub.press(f"{action}:{track_id}", message, user_id=2, permissions=read_only))
    env.dispatch(env.stub.press(f"fav:{track_id}", message, user_id=2, permissions=read_only))  # posts nothing
    callbacks = await env.stub.wait_for("callback", count=6)
    answers = [c for c in callbacks[1:] if c.payload["type"] == 4]  # answered at once: no database needed
    assert len(answers) == 4 and all(c.ephemeral for c in answers)
    texts = [c.payload["data"]["content"] for c in answers]
    refusals = [t for t in texts if "can't send messages in this channel" in t]
    assert len(refusals) == 4 and all("use /compose in a channel where you can post" in r for r in refusals)
    assert any("Added to your favourites" in r for r in await env.stub.wait_for_replies(5))
    assert await env.count(Favorite, Favorite.track_id == track_id) == 1

    env.dispatch(env.stub.press(f"reroll:{track_id}", message, dm=True))  # no permissions in a DM: it composes
    posts = await tracks_shown(env, 2)
    assert (await env.track(track_id_of(posts[-1]))).parent_id == track_id
    assert await env.count(Job) == 2


async def test_forgetme_asks_first_then_deletes_everything_of_the_user(env):
    env.dispatch(env.stub.command("settings", genre="pop"))
    await env.stub.wait_for_replies(1)
    mine, theirs = await stored_track(env, audio=b"ID3 mine"), await stored_track(env, owner="2")
    me = await env.db.run(lambda s: get_or_create_user(s, "discord", "1"))
    await env.db.run(lambda s: add_favorite(s, me, mine, ("discord", str(CHANNEL_ID))))
    mp3 = (await env.track(mine)).mp3_key

    env.dispatch(env.stub.command("forgetme"))
    question = (await env.stub.wait_for("callback", count=2))[-1]
    assert question.payload["type"] == 4 and question.ephemeral and "for good?" in question.payload["data"]["content"]
    assert question.custom_ids == ["forgetme:confirm", "forgetme:keep"]
    env.dispatch(env.stub.press("forgetme:keep", env.stub.answered_message(question)))
    kept = (await env.stub.wait_for("callback", count=3))[-1]
    assert kept.payload["type"] == 7 and "Kept" in kept.payload["data"]["content"]
    assert await env.count(User, User.platform_user_id == "1") == 1 and await env.count(Track) == 2

    await env.restart()  # the question needs no memory of having been asked
    env.dispatch(env.stub.press("forgetme:confirm", env.stub.answered_message(question)))
    [done] = await env.stub.wait_for("edit_original")
    assert done.content == "🗑 Done: I deleted your settings, favourites and 1 track."
    assert done.payload["components"] == []  # the buttons are gone with the question
    assert await env.count(User, User.platform_user_id == "1") == 0
    assert await env.count(Track) == 1 and (await env.track(theirs)) is not None
    assert await env.count(Favorite) == 0 and not env.store.exists(mp3)
    assert env.store.exists((await env.track(theirs)).mp3_key)


async def test_genres_and_help_name_every_command(env):
    env.dispatch(env.stub.command("genres"))
    env.dispatch(env.stub.command("help"))
    answers = await env.stub.wait_for("callback", count=2)  # the two are handled concurrently: either may be first
    genres, help_ = sorted(answers, key=lambda a: "Genres:" not in a.payload["data"]["content"])
    assert genres.ephemeral and "Genres: classic, jazz, ambient, pop." in genres.payload["data"]["content"]
    [sync] = env.stub.calls_to("sync")
    names = {c["name"] for c in sync.payload["_list"]}
    assert {"genres", "forgetme"} <= names
    assert all(f"/{name}" in help_.payload["data"]["content"] for name in names - {"help"}), names


async def test_a_failure_of_ours_under_a_button_or_a_command_is_apologised_for_privately(env, tmp_path, caplog):
    track_id = await stored_track(env)
    with sqlite3.connect(tmp_path / "bot.db") as db:
        db.execute("drop table favorites")  # the database breaks under the bot: storage raises
    pressed = env.dispatch(env.stub.press(f"fav:{track_id}", env.stub.posted(f"fav:{track_id}")))
    listed = env.dispatch(env.stub.command("favorites"))
    followups = await env.stub.wait_for("followup", count=2)
    for interaction in (pressed, listed):
        [sorry] = [f for f in followups if f.match["token"] == interaction["token"]]
        assert sorry.content == "⚠️ Something went wrong on my side; please try again." and sorry.ephemeral
    deleted = await env.stub.wait_for("delete_original", count=2)  # the "thinking…" placeholders are withdrawn
    assert {d.match["token"] for d in deleted} == {pressed["token"], listed["token"]}
    failures = [r for r in caplog.records if r.levelname == "ERROR" and "failed" in r.getMessage()]
    assert len(failures) == 2 and all(r.exc_info for r in failures)
    assert any("no such table: favorites" in str(r.exc_info[1].__cause__ or r.exc_info[1]) for r in failures)


async def test_the_share_button_offers_a_channel_picker_that_shares_as_the_command_does(env):
    track_id = await stored_track(env)
    env.dispatch(env.stub.press(f"share:{track_id}", env.stub.posted(f"share:{track_id}")))
    [picker] = await env.stub.wait_for("followup")
    assert picker.ephemeral and picker.custom_ids == [f"share-to:{track_id}"]
    [select] = picker.payload["components"][0]["components"]
    assert select["type"] == 8 and 0 in select["channel_types"] and 4 not in select["channel_types"]  # no categories

    await env.restart()  # the picker needs no memory of having been offered
    read_only = env.stub.channel(OTHER_CHANNEL + 2, "readonly", 1 << 10)  # the sharer may only view it
    env.dispatch(env.stub.choose(f"share-to:{track_id}", picker.response, [read_only]))
    replies = await env.stub.wait_for_replies(2)
    assert "can't post files in <#" in replies[-1] and not env.stub.calls_to("channel_message")
    elsewhere = env.stub.channel(OTHER_CHANNEL, "elsewhere", (1 << 51) - 1)
    env.dispatch(env.stub.choose(f"share-to:{track_id}", picker.response, [elsewhere]))
    replies = await env.stub.wait_for_replies(3)
    assert replies[-1] == f"📤 Shared #{track_id} into <#{OTHER_CHANNEL}>."
    [posted] = env.stub.calls_to("channel_message")
    assert posted.path == f"/channels/{OTHER_CHANNEL}/messages" and any(f.endswith(".mp3") for f in posted.files)
    assert posted.custom_ids[0] == f"reroll:{track_id}"
    assert await env.count(Share, Share.track_id == track_id, Share.chat_id == str(OTHER_CHANNEL)) == 1
    chosen = [c for c in env.stub.calls_to("callback")][1:]
    assert len(chosen) == 2 and all(c.payload["type"] == 5 and c.ephemeral for c in chosen)  # deferred privately
    assert all(f.ephemeral for f in env.stub.calls_to("followup"))


async def test_remix_rerolls_with_the_length_temperature_and_instrument_its_form_asks_for(env):
    track_id = await stored_track(env)  # calm, 5 s, temperature 0.9, piano
    message = env.stub.posted(f"remix:{track_id}")
    forms = []
    for n in (1, 2):  # a form is answered once, so each try is a new press
        env.dispatch(env.stub.press(f"remix:{track_id}", message))
        forms.append((await env.stub.wait_for("callback", count=2 * n - 1))[-1])
        assert forms[-1].payload["type"] == 9  # the form is the press's answer
        form = forms[-1].payload["data"]
        fields = [c["components"][0]["custom_id"] for c in form["components"]]
        assert form["title"] == f"Remix #{track_id}" and fields == ["seconds", "temperature", "instrument"]
        values = {"seconds": "999"} if n == 1 else {"seconds": "7", "temperature": "1.3", "instrument": "Organ"}
        if n == 2:
            await env.restart()  # a form open across a restart is still answered
        env.dispatch(env.stub.submit(form["custom_id"], values))
        if n == 1:
            [refusal] = (await env.stub.wait_for_replies(1))[-1:]
            assert refusal.startswith("🤔 seconds must be from 5 to 180"), refusal
    [post] = await tracks_shown(env, 1)
    child = await env.track(track_id_of(post))
    assert (child.parent_id, child.lineage, child.genre) == (track_id, "reroll", "calm")
    assert child.max_seconds == 7 and child.instrument == "organ"
    assert child.sampling["temperature"] == pytest.approx(1.3)
    assert await env.count(Job) == 1


async def test_the_instrument_select_renders_the_same_notes_as_a_new_track(env):
    message, post = await compose_one(env, genre="calm", seconds=5)
    parent_id = track_id_of(post)
    [select] = [c for row in message["components"] for c in row["components"] if c["type"] == 3]
    assert select["custom_id"] == f"instrument:{parent_id}" and len(select["options"]) == 8
    assert {"piano", "electric piano", "strings"} <= {o["value"] for o in select["options"]}

    env.dispatch(env.stub.pick(f"instrument:{parent_id}", message, ["piano"]))  # what it is played on already
    [refusal] = await env.stub.wait_for_replies(1)
    assert "played on the piano already" in refusal and await env.count(Job) == 1
    await env.restart()  # the select needs no memory of having been posted
    picked = env.dispatch(env.stub.pick(f"instrument:{parent_id}", message, ["strings"], user_id=2))  # another member
    [_, shown] = await tracks_shown(env, 2)
    [callback] = [c for c in env.stub.calls_to("callback") if c.match["id"] == picked["id"]]
    assert callback.payload["type"] == 5 and not callback.ephemeral  # deferred publicly, as 🔁 is
    assert shown.match["token"] == picked["token"]  # one message: its response became the track
    child, parent = await env.track(track_id_of(shown)), await env.track(parent_id)
    assert child.tokens == parent.tokens and (child.instrument, parent.instrument) == ("strings", "piano")
    assert (child.parent_id, child.lineage, child.seed, child.sampling) == (
        parent_id,
        "instrument",
        parent.seed,
        parent.sampling,
    )
    assert child.owner_id != parent.owner_id

    theirs = await stored_track(env, owner="3")  # never shared here
    env.dispatch(
        env.stub.pick(f"instrument:{theirs}", env.stub.posted_select(f"instrument:{theirs}", ["organ"]), ["organ"])
    )
    replies = await env.stub.wait_for_replies(2)
    assert "of yours or shared here" in replies[-1] and await env.count(Job) == 2


async def test_the_band_toggle_renders_the_same_notes_in_the_other_arrangement(env):
    message, post = await compose_one(env, genre="classic", seconds=5, arrangement="band")
    parent_id = track_id_of(post)
    assert post.custom_ids == track_custom_ids(parent_id, "solo") and post.labels[3] == "🎼 Piano alone"
    assert "· piano and band" in post.payload["embeds"][0]["title"]
    assert (await env.track(parent_id)).arrangement == "band"

    theirs = await stored_track(env, owner="3")  # never shared here
    env.dispatch(env.stub.press(f"arr:{theirs}:band", env.stub.posted(f"arr:{theirs}:band")))
    [refusal] = await env.stub.wait_for_replies(1)
    assert "of yours or shared here" in refusal and await env.count(Job) == 1
    await env.restart()  # the button needs no memory of having been posted
    pressed = env.dispatch(env.stub.press(f"arr:{parent_id}:solo", message, user_id=2))  # another member
    [_, shown] = await tracks_shown(env, 2)
    [callback] = [c for c in env.stub.calls_to("callback") if c.match["id"] == pressed["id"]]
    assert callback.payload["type"] == 5 and not callback.ephemeral  # deferred publicly, as 🔁 is
    assert shown.match["token"] == pressed["token"]  # one message: its response became the track
    child, parent = await env.track(track_id_of(shown)), await env.track(parent_id)
    assert child.tokens == parent.tokens and (child.arrangement, child.instrument) == ("solo", parent.instrument)
    assert (child.parent_id, child.lineage, child.seed) == (parent_id, "arrangement", parent.seed)
    assert shown.custom_ids == track_custom_ids(child.id, "band")


# --- the user's language -----------------------------------------------------------------------

RUSSIAN_BUTTONS = [
    "🔁 Переиграть",
    "🔥 Горячее",
    "❄️ Холоднее",
    "🎼 Фортепиано соло",  # ambient comes with its band
    "⭐ В избранное",
    "➕ Продолжить",
    "📤 Поделиться",
    "🎛 Ремикс",
    "",  # 🎹's instrument select: a placeholder, no label
]


async def test_a_russian_speaking_user_is_answered_in_russian(env):
    """interaction.locale picks the texts: a usage error naming the range, the track's embed and
    buttons, a favourite's answer. The synced commands carry Russian descriptions; their names,
    options and choices stay the English words people type."""
    [sync] = env.stub.calls_to("sync")
    compose = next(c for c in sync.payload["_list"] if c["name"] == "compose")
    assert compose["description_localizations"] == {"ru": "Сочинить фортепианный трек"}
    temperature = next(o for o in compose["options"] if o["name"] == "temperature")
    assert temperature["description"] == "randomness (from 0.1 to 2)"
    assert temperature["description_localizations"] == {"ru": "случайность (от 0.1 до 2)"}
    count = next(o for o in compose["options"] if o["name"] == "count")
    assert count["description_localizations"] == {
        "ru": "сколько сочинить сразу, чтобы оставить понравившийся (от 1 до 4; 1: только один)"
    }
    assert not compose.get("name_localizations") and not temperature.get("name_localizations")
    described = [d for c in sync.payload["_list"] for d in [c, *c.get("options", [])]]
    russian = [d["description_localizations"]["ru"] for d in described if d.get("description_localizations")]
    assert len(russian) > 20 and max(map(len, russian)) <= 100  # Discord's most

    env.stub.locales[1] = "ru"
    env.dispatch(env.stub.command("compose", genre="calm", temperature=5.0))
    [usage] = await env.stub.wait_for_replies(1)
    assert usage.startswith("🤔 значение temperature должно быть от 0.1 до 2, а не 5"), usage
    message, post = await compose_one(env, genre="calm", seconds=5)
    track_id = track_id_of(post)
    assert post.payload["embeds"][0]["title"].startswith(f"Эмбиент #{track_id} · ")
    assert post.labels == RUSSIAN_BUTTONS
    rows = post.payload["components"]
    [select] = [c for row in rows for c in row["components"] if c["custom_id"] == f"instrument:{track_id}"]
    assert select["placeholder"] == "🎹 Послушать на…"
    env.dispatch(env.stub.press(f"fav:{track_id}", message))
    assert (await env.stub.wait_for_replies(2))[-1] == "⭐ Добавлено в избранное"


async def test_a_language_without_a_catalogue_is_answered_in_english(env):
    env.stub.locales[1] = "de"
    env.dispatch(env.stub.command("genres"))
    [genres] = await env.stub.wait_for_replies(1)
    assert genres.startswith("Genres: classic, jazz, ambient, pop.")


async def test_a_job_resumed_after_a_restart_is_posted_in_its_user_s_language(env):
    await env.client.close()
    idle = new_runner(env)  # never started: accepts jobs and never composes, like a process that dies
    env.client = await logged_in(env, idle)
    env.stub.locales[1] = "ru"
    env.dispatch(env.stub.command("compose", genre="jazz", seconds=5))
    await eventually(lambda: env.count(Job))
    await env.client.close()
    await idle.stop()

    runner = new_runner(env)
    await runner.start()  # a fresh process on the same database: no interaction left, only the job
    try:
        env.client = await on_gateway(env, runner)
        [post] = await env.stub.wait_for("channel_message", timeout=60)
        assert post.payload["embeds"][0]["title"].startswith("Джаз #") and post.labels == RUSSIAN_BUTTONS
    finally:
        await env.client.close()
        await runner.stop()


# --- presses no component of ours sent ----------------------------------------------------------

PRESSER = 7
UNCLAIMED = ["", "nonsense", "remix:abc", "keep:-1", "x" * 100]  # custom ids no item of ours takes
KINDS = {ui.Button: 2, ui.Select: 3, ui.ChannelSelect: 8}  # what a DynamicItem wraps → Discord's component type


def kind_of(item: type[ui.DynamicItem]) -> int:
    [wrapped] = typing.get_args(item.__orig_bases__[0])
    return KINDS[wrapped]


def press_payload(env: Env, custom_id: str, kind: int, values: list[str] | None) -> dict:
    """A press of the component `custom_id` (of Discord's type `kind`) under a message of the bot's
    holding it; a select's `values` as chosen (a channel select's resolved as Discord resolves them)."""
    if kind == 2:
        return env.stub.press(custom_id, env.stub.posted(custom_id), PRESSER)
    if kind == 3:
        return env.stub.pick(custom_id, env.stub.posted_select(custom_id, values or ["organ"]), values or [], PRESSER)
    channels = [env.stub.channel(OTHER_CHANNEL, "elsewhere")] if values else []
    return env.stub.choose(custom_id, env.stub.posted_channel_select(custom_id), channels, PRESSER)


async def pressed_alone(env: Env, payload: dict) -> str:
    """Deliver a press and return what its presser alone was told, once it was handled; asserts one
    response to the interaction and nothing left in the channel for anyone else."""
    token = payload["token"]

    def mine() -> list:
        return [c for c in env.stub.calls if c.match.get("token") == token or c.match.get("id") == payload["id"]]

    env.dispatch(payload)

    async def answered() -> bool:
        """Told something: a follow-up, an immediate answer (a message, the pressed one updated, a
        form), or the pressed message edited after a quiet defer."""
        names = {c.name if c.name != "callback" else c.payload["type"] for c in mine()}
        return bool(names & {"followup", 4, 7, 9}) or {6, "edit_original"} <= names

    await eventually(answered)
    await asyncio.sleep(0.3)  # anything it does after answering, too
    calls = mine()
    responses = [c for c in calls if c.name == "callback"]
    assert len(responses) == 1, [(c.name, c.payload) for c in calls]
    [response] = responses
    public = [c for c in calls if c.name == "followup" and not c.ephemeral]
    public += [c for c in calls if c.name == "callback" and c.payload["type"] == 4 and not c.ephemeral]
    assert not public and not env.stub.calls_to("channel_message"), [(c.name, c.payload) for c in calls]
    if response.payload["type"] == 5 and not response.ephemeral:  # a public "thinking…": withdrawn
        assert any(c.name == "delete_original" for c in calls), [(c.name, c.payload) for c in calls]
    told = [c.content for c in calls if c.name in ("followup", "edit_original")]
    told += [(c.payload.get("data") or {}).get("content") or "" for c in calls if c.name == "callback"]
    told += [(c.payload.get("data") or {}).get("title") or "" for c in calls if c.payload.get("type") == 9]
    return " | ".join(t for t in told if t)


@pytest.fixture
async def quiet_env(tmp_path, monkeypatch):
    """As `env`, with a runner that accepts jobs and composes none (nothing here composes)."""
    stub = DiscordApiStub().start()
    monkeypatch.setattr(discord.http.Route, "BASE", stub.base_url)
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    env = Env(stub, db, store, new_runner_unstarted(db, store), None)  # type: ignore[arg-type]
    env.client = await logged_in(env)
    try:
        yield env
    finally:
        await env.client.close()
        await db.dispose()
        stub.stop()


def new_runner_unstarted(db: Database, store: LocalArtifactStore) -> InProcessRunner:
    return InProcessRunner(db, store, runner_model, RunnerSettings())


@pytest.mark.parametrize("item", [*DYNAMIC_ITEMS, None], ids=lambda i: i.__name__ if i else "unclaimed")
async def test_a_press_no_component_of_ours_sent_is_answered_privately_and_posts_nothing(quiet_env, caplog, item):
    """For every item the client registers (and ids none claims): presses made from its template,
    naming a track that does not exist and another's; a select with no choice. Each is answered to
    the presser alone, and someone else's track reads as one that does not exist."""
    env = quiet_env
    assert set(env.client._connection._view_store._dynamic_items.values()) == set(DYNAMIC_ITEMS)
    foreign = await stored_track(env, owner="2")
    if item is None:
        for custom_id in UNCLAIMED:
            assert not claimed(custom_id)
            assert await pressed_alone(env, press_payload(env, custom_id, 2, None)) == OUT_OF_DATE
    else:
        kind = kind_of(item)
        for custom_id in examples(template_of(item)):
            for values in ([], ["zzzz"]) if kind != 2 else (None,):
                payload = press_payload(env, custom_id, kind, values)
                told = await pressed_alone(env, payload)
                assert told, custom_id
                if values == []:
                    assert told == OUT_OF_DATE, (custom_id, told)
                elif MISSING_ID in custom_id:
                    theirs = press_payload(env, custom_id.replace(MISSING_ID, str(foreign)), kind, values)
                    told_theirs = await pressed_alone(env, theirs)
                    assert told_theirs.replace(f"#{foreign}", f"#{MISSING_ID}") == told, (custom_id, told, told_theirs)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


async def test_a_form_no_remix_of_ours_opened_is_answered_privately_and_posts_nothing(quiet_env):
    env = quiet_env
    foreign = await stored_track(env, owner="2")
    for custom_id in ("", "nonsense", "remix-form:abc", "remix-form:-1", "x" * 100):
        told = await pressed_alone(env, env.stub.submit(custom_id, {"seconds": "7"}, user_id=PRESSER))
        assert told == OUT_OF_DATE, custom_id
    told = await pressed_alone(env, env.stub.submit(f"remix-form:{foreign}", {"seconds": "7"}, user_id=PRESSER))
    assert "of yours or shared here" in told
    told = await pressed_alone(env, env.stub.submit(f"remix-form:{foreign}", {"seconds": "lots"}, user_id=PRESSER))
    assert told.startswith("🤔 seconds")
    bare = env.stub.submit(f"remix-form:{foreign}", {}, user_id=PRESSER)
    bare["data"]["components"] = [{"type": 1}, "junk", {"type": 4, "custom_id": 5}]
    assert "of yours or shared here" in await pressed_alone(env, bare)
    assert await env.count(Job) == 0

"""The Telegram bot end to end: the real python-telegram-bot Application polls a loopback stub of
the Bot API, and a tiny random model composes through the in-process runner into SQLite."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from dataclasses import dataclass

import pytest
from conftest import tiny_model
from sqlalchemy import func, select
from telegram_stub import BOT_USERNAME, BotApiStub

from bot.telegram import build_application
from generator import vocab as V
from jobs.inprocess import InProcessRunner, RunnerSettings
from storage import Database, Favorite, Job, LocalArtifactStore, Share, Track
from storage.tracks import NewTrack, record_track
from storage.users import get_or_create_user

TOKEN = "123456:TEST-not-a-real-token"


def model():
    m = tiny_model(max_len=256)
    m.name, m.checkpoint_sha256 = "tiny", "0" * 64
    return m


@dataclass
class Env:
    stub: BotApiStub
    db: Database
    store: LocalArtifactStore
    ids: itertools.count

    def send(self, text: str, user_id: int = 1, **kw) -> dict:
        update = {"update_id": next(self.ids), "message": self.stub.message(text, user_id, **kw)}
        self.stub.queue_update(update)
        return update

    def press(self, data: str, user_id: int = 1) -> dict:
        update = {"update_id": next(self.ids), "callback_query": self.stub.callback(data, user_id)}
        self.stub.queue_update(update)
        return update

    async def count(self, table, *where) -> int:
        return await self.db.run(lambda s: s.scalar(select(func.count()).select_from(table).where(*where)))

    async def track(self, track_id: int) -> Track:
        return await self.db.run(lambda s: s.get(Track, track_id))


@pytest.fixture
async def env(tmp_path):
    stub = BotApiStub().start()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    runner = InProcessRunner(db, store, model, RunnerSettings(progress_interval_s=0.05))
    await runner.start()
    app = build_application(TOKEN, runner, db, store, base_url=stub.base_url, base_file_url=stub.file_url)
    await app.initialize()
    await app.post_init(app)
    await app.updater.start_polling(timeout=1)
    await app.start()
    try:
        yield Env(stub, db, store, itertools.count(100))
    finally:
        await app.updater.stop()
        await app.stop()
        await app.shutdown()
        await runner.stop()
        await db.dispose()
        stub.stop()


async def eventually(check, timeout: float = 10.0):
    for _ in range(int(timeout / 0.05)):
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.05)
    raise AssertionError("the condition never held")


async def stored_track(env: Env, owner: str = "1", file_id: str | None = None, **kw) -> int:
    """A track as if composed earlier, without composing (history, favourites, access, share)."""
    mp3 = env.store.put(b"ID3 not really an mp3", "mp3")
    events = [V.VELOCITY + 20, 60, V.TIME_SHIFT + 49, V.NOTE_OFF + 60, 64, V.TIME_SHIFT + 49, V.NOTE_OFF + 64] * 20

    async def make(s):
        user = await get_or_create_user(s, "telegram", owner)
        new = NewTrack(
            genre=kw.pop("genre", "calm"),
            model_id="tiny",
            checkpoint_sha256="0" * 64,
            seed=kw.pop("seed", 7),
            sampling={"temperature": 0.9, "top_k": 40, "top_p": 0.99},
            tokens=[V.genre_token("calm"), *events],
            max_seconds=5.0,
            duration_s=4.0,
            mp3_key=mp3,
            **kw,
        )
        track = await record_track(s, user, new)
        track.file_ids = {"telegram": file_id} if file_id else {}
        return track.id

    return await env.db.run(make)


def track_id_of(call) -> int:
    return int(call.buttons[0].split(":")[1])


async def test_compose_shows_progress_then_one_playable_mp3(env, tmp_path):
    env.send("/compose ambient len=5")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    progress = env.stub.calls_to("sendMessage")[0]
    assert progress.params["text"].startswith("⏳")
    edits = env.stub.calls_to("editMessageText")
    assert edits and edits[-1].params["text"] == "✅ Done"
    assert all(e.params["message_id"] == edits[0].params["message_id"] for e in edits)

    mp3 = tmp_path / "sent.mp3"
    mp3.write_bytes(audio.files["audio"])
    probe = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=format_name,duration", "-of", "json", str(mp3)],
        capture_output=True,
        text=True,
        check=True,
    )
    fmt = json.loads(probe.stdout)["format"]
    assert fmt["format_name"] == "mp3" and float(fmt["duration"]) > 0

    track_id = track_id_of(audio)
    assert audio.params["title"] == f"Ambient #{track_id}" and audio.params["performer"] == "Melomania"
    assert audio.params["caption"].startswith(f"Ambient #{track_id}")
    assert audio.buttons == [f"{a}:{track_id}" for a in ("reroll", "hotter", "cooler", "fav", "continue", "share")]
    assert await eventually(lambda: _file_id(env, track_id)) == "AUDIO1"
    [midi] = await env.stub.wait_for("sendDocument")
    [roll] = await env.stub.wait_for("sendPhoto")
    assert midi.files["document"].startswith(b"MThd") and roll.files["photo"].startswith(b"\x89PNG")
    await asyncio.sleep(0.3)
    assert len(env.stub.calls_to("sendAudio")) == 1
    commands = env.stub.calls_to("setMyCommands")[0].json("commands")
    assert {"compose", "history", "favorites", "share", "cancel"} <= {c["command"] for c in commands}


async def _file_id(env: Env, track_id: int) -> str | None:
    return (await env.track(track_id)).file_ids.get("telegram")


async def test_hotter_button_composes_child_with_higher_temperature(env):
    env.send("/compose ambient len=5 temp=0.8")
    [first] = await env.stub.wait_for("sendAudio", timeout=60)
    parent_id = track_id_of(first)
    env.press(f"hotter:{parent_id}")
    second = (await env.stub.wait_for("sendAudio", count=2, timeout=60))[1]
    child = await env.track(track_id_of(second))
    parent = await env.track(parent_id)
    assert child.parent_id == parent_id and child.lineage == "hotter" and child.genre == parent.genre == "calm"
    assert child.sampling["temperature"] == pytest.approx(0.9) and parent.sampling["temperature"] == 0.8
    assert "hotter of #" in second.params["caption"]
    assert env.stub.calls_to("answerCallbackQuery")


async def test_a_redelivered_update_composes_once(env):
    update = env.send("/compose ambient len=5")
    env.stub.queue_update(update)  # Telegram delivers it again
    await env.stub.wait_for("sendAudio", timeout=60)
    env.stub.queue_update(update)  # and once more after it finished
    await asyncio.sleep(1.5)
    assert len(env.stub.calls_to("sendAudio")) == 1
    assert await env.count(Job) == 1 and await env.count(Track) == 1


async def test_continue_button_primes_a_new_track_with_the_old_one(env):
    track_id = await stored_track(env)
    env.press(f"continue:{track_id}")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    child = await env.track(track_id_of(audio))
    assert child.parent_id == track_id and child.lineage == "continue" and child.primer_ref == f"track:{track_id}"


async def test_favourite_button_toggles_a_favourite(env):
    track_id = await stored_track(env)
    env.press(f"fav:{track_id}")
    [markup] = await env.stub.wait_for("editMessageReplyMarkup")
    assert f"unfav:{track_id}" in markup.buttons
    assert await env.count(Favorite, Favorite.track_id == track_id) == 1
    env.press(f"unfav:{track_id}")
    await env.stub.wait_for("editMessageReplyMarkup", count=2)
    assert await env.count(Favorite) == 0
    answers = [c.params.get("text", "") for c in env.stub.calls_to("answerCallbackQuery")]
    assert answers == ["⭐ Added to your favourites", "Removed from your favourites"]


async def test_history_lists_tracks_a_page_at_a_time(env):
    ids = [await stored_track(env, seed=i) for i in range(12)]
    env.send("/history")
    [page1] = await env.stub.wait_for("sendMessage")
    assert f"#{ids[-1]} Ambient" in page1.params["text"] and "More: /history 2" in page1.params["text"]
    assert f"#{ids[1]} " not in page1.params["text"]
    env.send("/history 2")
    page2 = (await env.stub.wait_for("sendMessage", count=2))[1]
    assert f"#{ids[0]} " in page2.params["text"] and f"#{ids[1]} " in page2.params["text"]
    assert "More:" not in page2.params["text"]


async def test_share_into_a_channel_reuses_the_uploaded_file(env):
    track_id = await stored_track(env, file_id="CACHED-FILE-ID")
    env.send(f"/share {track_id} @mychannel")
    [audio] = await env.stub.wait_for("sendAudio")
    assert audio.chat_id == "@mychannel" and audio.params["audio"] == "CACHED-FILE-ID" and not audio.files
    [member] = env.stub.calls_to("getChatMember")
    assert member.chat_id == "@mychannel" and member.params["user_id"] == "1"
    await env.stub.wait_for("sendMessage")
    assert "Shared" in env.stub.calls_to("sendMessage")[-1].params["text"]
    assert await env.count(Share, Share.track_id == track_id) == 1


async def test_sharing_needs_membership_of_the_channel(env):
    env.stub.member_status = "left"
    track_id = await stored_track(env)
    env.send(f"/share {track_id} @mychannel")
    [reply] = await env.stub.wait_for("sendMessage")
    assert "member of @mychannel" in reply.params["text"]
    assert not env.stub.calls_to("sendAudio") and await env.count(Share) == 0


BAD_INPUT = [
    ("/compose polka", "don't know the genre"),
    ("/compose jazz temp=abc", "temp must be a number"),
    ("/compose jazz len=999999", "len must be from 5 to 180"),
    ("/compose " + "x" * 4000, "too long"),
    (f"/compose@{BOT_USERNAME} polka", "don't know the genre"),
    ("/compose", "which genre?"),
    ("/continue 999", "there is no track #999"),
    ("/share 999 @mychannel", "there is no track #999"),
    ("x" * 4000, "too long"),
]


async def test_bad_input_gets_a_clear_answer_and_composes_nothing(env):
    for i, (text, answer) in enumerate(BAD_INPUT, 1):
        in_group = text.startswith(f"/compose@{BOT_USERNAME}")
        env.send(text, chat_id=-100 if in_group else None, kind="group" if in_group else "private")
        replies = await env.stub.wait_for("sendMessage", count=i)
        assert answer in replies[-1].params["text"], text[:40]
    someone_elses = await stored_track(env, owner="2")
    for n, data in enumerate((f"hotter:{someone_elses}", "reroll:9999", f"fav:{someone_elses}", "bogus:1"), 1):
        env.press(data)
        answers = await env.stub.wait_for("answerCallbackQuery", count=n)
        assert answers[-1].params.get("show_alert") == "true"
    texts = [c.params["text"] for c in env.stub.calls_to("answerCallbackQuery")]
    assert "belongs to someone else" in texts[0] and "there is no track #9999" in texts[1]
    assert "out of date" in texts[3]
    assert await env.count(Job) == 0 and await env.count(Favorite) == 0
    assert not env.stub.calls_to("sendAudio")


async def test_settings_become_defaults_and_cancel_stops_the_track(env):
    env.send("/settings genre=jazz temp=1.2 len=180")
    [saved] = await env.stub.wait_for("sendMessage")
    assert "Saved" in saved.params["text"] and "genre: jazz" in saved.params["text"]
    env.send("/compose")
    await env.stub.wait_for("sendMessage", count=2)
    job = await env.db.run(lambda s: s.scalar(select(Job)))
    assert job.request["genre"] == "jazz" and job.request["seconds"] == 180
    assert job.request["sampling"]["temperature"] == 1.2
    env.send("/cancel")
    replies = await env.stub.wait_for("sendMessage", count=3)
    assert "Cancelled" in replies[-1].params["text"]
    await env.stub.wait_for("editMessageText", text="✖️ Cancelled")
    assert not env.stub.calls_to("sendAudio")


async def test_favourites_are_listed_and_forgetme_deletes_everything(env):
    track_id = await stored_track(env)
    env.press(f"fav:{track_id}")
    await env.stub.wait_for("answerCallbackQuery")
    env.send("/favorites")
    [listing] = await env.stub.wait_for("sendMessage")
    assert f"#{track_id} Ambient" in listing.params["text"]
    env.send("/forgetme")
    replies = await env.stub.wait_for("sendMessage", count=2)
    assert "1 tracks" in replies[-1].params["text"]
    assert await env.count(Track) == 0 and await env.count(Favorite) == 0


def test_run_telegram_without_a_token_is_a_one_line_error(monkeypatch):
    from typer.testing import CliRunner

    from melomania.cli import app

    monkeypatch.delenv("MELOMANIA_TELEGRAM_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["run", "telegram"])
    assert result.exit_code == 2 and "MELOMANIA_TELEGRAM_TOKEN is not set" in result.output
    assert len(result.output.strip().splitlines()) == 1
    monkeypatch.setenv("MELOMANIA_TELEGRAM_TOKEN", "not-a-token-SECRET")
    result = CliRunner().invoke(app, ["run", "telegram"])
    assert result.exit_code == 2 and "is not a bot token" in result.output and "SECRET" not in result.output


@pytest.mark.filterwarnings("ignore::telegram.warnings.PTBDeprecationWarning")  # RetryAfter's own constructor
async def test_a_flood_wait_from_telegram_is_waited_out_and_retried(env):
    env.stub.flood["sendMessage"] = 1
    env.send("/genres")
    first, retried = await env.stub.wait_for("sendMessage", count=2)
    assert first.params == retried.params
    assert "ambient" in retried.params["text"]

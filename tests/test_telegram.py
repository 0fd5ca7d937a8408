"""The Telegram bot end to end: the real python-telegram-bot Application polls a loopback stub of
the Bot API, and a tiny random model composes through the in-process runner into SQLite."""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import re
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pretty_midi
import pytest
from conftest import runner_model
from patterns import MISSING_ID, examples
from sqlalchemy import func, select
from telegram import Update
from telegram.ext import Application, CallbackQueryHandler
from telegram_stub import BOT_USERNAME, BotApiStub, Call

from bot.grammar import UsageError
from bot.limits import Limits, RateLimiter
from bot.replies import OUT_OF_DATE, PICK_ONE, track_buttons
from bot.telegram import build_application, webhook_from
from bot.telegram.buttons import INSTRUMENT_DATA, instrument_picker
from generator import vocab as V
from jobs.api import ComposeRequest
from jobs.inprocess import InProcessRunner, RunnerSettings
from storage import Database, Favorite, Job, JobState, LocalArtifactStore, Share, Track, User
from storage.favorites import add_favorite
from storage.jobs import start_job
from storage.tracks import NewTrack, record_track
from storage.users import get_or_create_user

TOKEN = "123456:TEST-not-a-real-token"


@dataclass
class Env:
    stub: BotApiStub
    db: Database
    store: LocalArtifactStore
    ids: itertools.count

    def _queue(self, kind: str, payload: dict) -> dict:
        update = {"update_id": next(self.ids), kind: payload}
        self.stub.queue_update(update)
        return update

    def send(self, text: str, user_id: int = 1, **kw) -> dict:
        return self._queue("message", self.stub.message(text, user_id, **kw))

    def press(self, data: str, user_id: int = 1, under: dict | None = None) -> dict:
        """A press of a button under `under` (a message in some chat; default: the user's private chat)."""
        return self._queue("callback_query", self.stub.callback(data, user_id, message=under))

    def reply(self, text: str, to: dict, user_id: int = 1) -> dict:
        return self._queue("message", self.stub.reply(text, to, user_id))

    def inline(self, query: str, user_id: int = 1) -> dict:
        return self._queue("inline_query", self.stub.inline(query, user_id))

    async def count(self, table, *where) -> int:
        return await self.db.run(lambda s: s.scalar(select(func.count()).select_from(table).where(*where)))

    async def track(self, track_id: int) -> Track:
        return await self.db.run(lambda s: s.get(Track, track_id))


@contextlib.asynccontextmanager
async def running_bot(
    stub: BotApiStub, db: Database, store: LocalArtifactStore, compose: bool = True, **kw
) -> AsyncIterator[Application]:
    """The runner and the bot started as `melomania run telegram` does (post_init and post_stop
    included), stopped in its order. compose=False: a runner that accepts jobs and never composes
    them, like a process that dies right after accepting."""
    runner = InProcessRunner(db, store, runner_model, RunnerSettings(progress_interval_s=0.05))
    if compose:
        await runner.start()
    app = build_application(TOKEN, runner, db, store, base_url=stub.base_url, base_file_url=stub.file_url, **kw)
    await app.initialize()
    await app.post_init(app)
    await app.start()
    try:
        yield app
    finally:
        if app.updater.running:
            await app.updater.stop()
        await app.stop()
        await app.post_stop(app)
        await app.shutdown()
        await runner.stop()


@contextlib.asynccontextmanager
async def between_starts(tmp_path) -> AsyncIterator[Env]:
    """The Bot API stub, a database and an artifact store, which outlive the bots started on them
    (`running_bot`), as across a restart."""
    stub = BotApiStub().start()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    try:
        yield Env(stub, db, store, itertools.count(100))
    finally:
        await db.dispose()
        stub.stop()


@contextlib.asynccontextmanager
async def bot_env(tmp_path, **kw) -> AsyncIterator[Env]:
    async with between_starts(tmp_path) as env, running_bot(env.stub, env.db, env.store, **kw) as app:
        await app.updater.start_polling(timeout=1)
        yield env


@pytest.fixture
async def env(tmp_path):
    async with bot_env(tmp_path) as e:
        yield e


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


def post_in(chat_id: int, kind: str) -> dict:
    """A track's message as posted in a group or channel, for presses under it."""
    return {"message_id": 5, "date": 0, "chat": {"id": chat_id, "type": kind, "title": "t"}, "text": "a track"}


async def shared_track(env: Env, chat_id: int) -> int:
    """A track of user 1's, shared into `chat_id`."""
    from storage.shares import record_share

    track_id = await stored_track(env)
    owner = await env.db.run(lambda s: get_or_create_user(s, "telegram", "1"))
    await env.db.run(lambda s: record_share(s, owner, track_id, ("telegram", str(chat_id)), 5))
    return track_id


def track_id_of(call) -> int:
    return int(call.buttons[0].split(":")[1])


async def test_compose_shows_progress_then_one_playable_mp3(env, tmp_path):
    request = env.send("/compose ambient len=5")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    progress = env.stub.calls_to("sendMessage")[0]
    assert progress.params["text"].startswith("⏳")
    edits = env.stub.calls_to("editMessageText")
    assert all(e.params["message_id"] == str(progress.result["message_id"]) for e in edits)
    assert audio.replied_to == request["message"]["message_id"]  # the track answers the command
    [deleted] = await env.stub.wait_for("deleteMessage")  # the progress message goes once it is posted
    assert deleted.params["message_id"] == str(progress.result["message_id"])

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
    actions = ("reroll", "hotter", "cooler", "fav", "continue", "share", "inst", "arr", "more")
    # 📤 Share opens Telegram's chat picker, which sends an inline query for the track
    shown = {"share": f"pick:#{track_id}", "arr": f"arr:{track_id}:solo"}  # ambient comes with its band
    assert audio.buttons == [shown.get(a, f"{a}:{track_id}") for a in actions]
    assert await eventually(lambda: _file_id(env, track_id)) == "AUDIO1"
    await asyncio.sleep(0.3)
    assert len(env.stub.calls_to("sendAudio")) == 1
    assert env.stub.live_messages("1") == [audio]  # one message per track: the audio alone
    [action] = env.stub.calls_to("sendChatAction")  # "sending audio…" while it uploads
    assert action.params["action"] == "upload_voice" and action.at <= audio.at
    commands = env.stub.calls_to("setMyCommands")[0].json("commands")
    assert {"compose", "history", "favorites", "share", "cancel"} <= {c["command"] for c in commands}


async def test_more_sends_the_midi_and_piano_roll_as_one_album_in_reply_to_the_track(env):
    env.send("/compose ambient len=5")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    await env.stub.wait_for("deleteMessage")
    track_id = track_id_of(audio)
    under = {**audio.result, "chat": {"id": 1, "type": "private", "first_name": "Ada"}}
    press = env.press(f"more:{track_id}", under=under)
    [album] = await env.stub.wait_for("sendMediaGroup")
    assert [m["type"] for m in album.json("media")] == ["document", "document"]
    midi, roll = (album.files[m["media"].removeprefix("attach://")] for m in album.json("media"))
    assert midi.startswith(b"MThd") and roll.startswith(b"\x89PNG")
    assert album.replied_to == audio.result["message_id"]
    assert env.stub.calls_to("sendChatAction")[-1].params["action"] == "upload_document"
    env.stub.queue_update(press)  # the same press delivered again sends nothing twice
    await env.stub.wait_for("answerCallbackQuery", count=2)
    await asyncio.sleep(0.3)
    assert len(env.stub.calls_to("sendMediaGroup")) == 1
    assert len(env.stub.live_messages("1")) == 3  # the track, and the two files More added
    env.press(f"more:{await stored_track(env, owner='2')}")  # someone else's track
    assert "of yours or shared here" in (await env.stub.wait_for("answerCallbackQuery", count=3))[-1].params["text"]


async def _file_id(env: Env, track_id: int) -> str | None:
    return (await env.track(track_id)).file_ids.get("telegram")


async def compose_then_press(env: Env, command: str, button: str):
    """Compose with `command`, press `button` on the track; (the second sendAudio, child, parent)."""
    env.send(command)
    [first] = await env.stub.wait_for("sendAudio", timeout=60)
    parent_id = track_id_of(first)
    env.press(f"{button}:{parent_id}")
    second = (await env.stub.wait_for("sendAudio", count=2, timeout=60))[1]
    return second, await env.track(track_id_of(second)), await env.track(parent_id)


async def test_hotter_button_composes_child_with_higher_temperature(env):
    second, child, parent = await compose_then_press(env, "/compose ambient len=5 temp=0.8", "hotter")
    parent_id = parent.id
    assert child.parent_id == parent_id and child.lineage == "hotter" and child.genre == parent.genre == "calm"
    assert child.sampling["temperature"] == pytest.approx(0.9) and parent.sampling["temperature"] == 0.8
    assert "hotter of #" in second.params["caption"]
    assert env.stub.calls_to("answerCallbackQuery")


async def test_reroll_composes_the_same_recipe_at_a_new_seed(env):
    _, child, parent = await compose_then_press(env, "/compose ambient len=5 temp=0.8 seed=11", "reroll")
    parent_id = parent.id
    assert child.lineage == "reroll" and child.parent_id == parent_id and child.genre == "calm"
    assert child.seed != parent.seed == 11
    assert child.sampling == parent.sampling  # temperature 0.8 and everything else kept


async def test_count_sends_the_candidates_as_one_album_and_a_picker_and_keeping_one_leaves_its_track(env):
    request = env.send("/compose ambient len=5 count=3")
    env.stub.queue_update(request)  # delivered again: still three candidates, once
    [album] = await env.stub.wait_for("sendMediaGroup", timeout=90)
    [picker] = await env.stub.wait_for("sendMessage", text=PICK_ONE)
    media = album.json("media")
    assert [m["type"] for m in media] == ["audio"] * 3
    assert [m["caption"].split(" · ")[0] for m in media] == ["1", "2", "3"]
    ids = [int(data.split(":")[1]) for data in picker.buttons]
    assert picker.buttons == [f"keep:{t}:{sent['message_id']}" for t, sent in zip(ids, album.result)]
    # 5 s of music; the ambient band's pad rings on for a few seconds after it
    assert all(re.match(rf"{n} · Ambient #{t} · 0:[01]\d", m["caption"]) for n, (m, t) in enumerate(zip(media, ids), 1))
    assert len({(await env.track(t)).seed for t in ids}) == 3
    assert album.replied_to == picker.replied_to == request["message"]["message_id"]
    progress = [c for c in env.stub.calls_to("sendMessage") if c.params["text"].startswith("⏳")]
    assert len(progress) == 1  # one progress message for the group
    assert all(
        e.params["message_id"] == str(progress[0].result["message_id"]) for e in env.stub.calls_to("editMessageText")
    )
    [deleted] = await env.stub.wait_for("deleteMessage")
    assert deleted.params["message_id"] == str(progress[0].result["message_id"])
    await asyncio.sleep(0.3)
    assert not env.stub.calls_to("sendAudio") and len(env.stub.calls_to("sendMediaGroup")) == 1
    assert env.stub.live_messages("1") == [album] * 3 + [picker]
    assert await env.count(Job) == await env.count(Track) == 3

    under = private(picker) | {"reply_to_message": request["message"]}
    env.press(picker.buttons[1], user_id=2, under=under)  # someone else's pick
    [refused] = await env.stub.wait_for("answerCallbackQuery")
    assert refused.params["text"] == "🤔 only the person who asked for these can pick one"
    env.press(picker.buttons[1], under=under)
    [kept] = await env.stub.wait_for("sendAudio")
    assert track_id_of(kept) == ids[1] and kept.replied_to == request["message"]["message_id"]
    assert kept.params["audio"] == album.result[1]["audio"]["file_id"]  # sent again by file id, no upload
    [gone] = await env.stub.wait_for("deleteMessages")
    assert gone.json("message_ids") == [sent["message_id"] for sent in album.result] + [picker.result["message_id"]]
    assert env.stub.live_messages("1") == [kept]  # one track message left
    env.send("/history")
    page = (await env.stub.wait_for("sendMessage", count=3))[-1]
    assert all(f"#{t} Ambient" in page.params["text"] for t in ids)  # the others stay in history


async def test_count_out_of_range_is_refused_naming_the_range(env):
    for n, count in enumerate((5, 0), 1):
        env.send(f"/compose ambient count={count}")
        said = (await env.stub.wait_for("sendMessage", count=n))[-1]
        assert said.params["text"] == f"🤔 count must be from 1 to 4, not {count} (for example count=3)"
    assert await env.count(Job) == 0


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


async def test_instrument_button_renders_the_same_notes_on_the_instrument_picked(env):
    track_id = await stored_track(env)  # calm, on the piano
    favourited = {"inline_keyboard": [[{"text": "★ Favourited", "callback_data": f"unfav:{track_id}"}]]}
    card = {**post_in(1, "private"), "chat": {"id": 1, "type": "private", "first_name": "Ada"}}
    env.press(f"inst:{track_id}", under={**card, "reply_markup": favourited})
    [picker] = await env.stub.wait_for("editMessageReplyMarkup")
    names = ("piano", "electric_piano", "organ", "vibraphone", "guitar", "harp", "strings", "pad")
    assert picker.buttons == [*(f"inst:{track_id}:{n}" for n in names), f"inst:{track_id}:back_fav"]
    env.press(f"inst:{track_id}:back_fav", under=card)  # ◀ Back: the track's buttons, still ★
    back = (await env.stub.wait_for("editMessageReplyMarkup", count=2))[-1]
    assert back.buttons[3] == f"unfav:{track_id}"
    assert back.buttons[-3:] == [f"inst:{track_id}", f"arr:{track_id}:band", f"more:{track_id}"]  # 🎸: it is solo

    env.press(f"inst:{track_id}:piano", under=card)
    env.press(f"inst:{track_id}:kazoo", under=card)
    answers = await env.stub.wait_for("answerCallbackQuery", count=4)
    assert "played on the piano already" in answers[2].params["text"]
    assert "I don't know the instrument 'kazoo'" in answers[3].params["text"]
    assert await env.count(Job) == 0

    env.press(f"inst:{track_id}:electric_piano", under=card)
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    await env.stub.wait_for("deleteMessage")
    child, parent = await env.track(track_id_of(audio)), await env.track(track_id)
    assert child.tokens == parent.tokens and child.instrument == "electric piano" != parent.instrument
    assert (child.parent_id, child.lineage, child.genre, child.seed) == (track_id, "instrument", "calm", parent.seed)
    assert parent.sampling.items() <= child.sampling.items()  # its recipe still composes these notes
    assert audio.replied_to == card["message_id"] and "electric piano" in audio.params["caption"]
    assert env.stub.live_messages("1") == [audio]  # one message: the progress message made way for it

    env.press(f"inst:{track_id}:organ", user_id=2)  # someone the track was never shared with
    refused = (await env.stub.wait_for("answerCallbackQuery", count=6))[-1]
    assert "of yours or shared here" in refused.params["text"] and await env.count(Job) == 1


async def test_band_toggle_renders_the_same_notes_in_the_other_arrangement(env):
    env.send("/compose classic band len=5")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    track_id, card = track_id_of(audio), private(audio)
    parent = await env.track(track_id)
    assert parent.arrangement == "band" and "· piano and band" in audio.params["caption"]
    assert audio.buttons[-3:] == [f"inst:{track_id}", f"arr:{track_id}:solo", f"more:{track_id}"]
    assert audio.labels[-2] == "🎼 Piano alone"

    env.press(f"arr:{track_id}:band", under=card)  # a band already
    env.press(f"arr:{track_id}:solo", user_id=2)  # someone the track was never shared with
    answers = [a.params["text"] for a in await env.stub.wait_for("answerCallbackQuery", count=2)]
    # concurrent updates: the two presses are answered in either order
    assert any(f"track #{track_id} is played with its band already" in a for a in answers)
    assert any("of yours or shared here" in a for a in answers) and await env.count(Job) == 1

    env.press(f"arr:{track_id}:solo", under=card)
    [_, toggled] = await env.stub.wait_for("sendAudio", count=2, timeout=60)
    await env.stub.wait_for("deleteMessage", count=2)
    child = await env.track(track_id_of(toggled))
    assert child.tokens == parent.tokens and child.arrangement == "solo" and child.instrument == parent.instrument
    assert (child.parent_id, child.lineage, child.seed) == (track_id, "arrangement", parent.seed)
    assert f"rearranged from #{track_id}" in toggled.params["caption"] and "band" not in toggled.params["caption"]
    assert toggled.buttons[-2] == f"arr:{child.id}:band" and toggled.replied_to == audio.result["message_id"]
    assert env.stub.live_messages("1") == [audio, toggled]  # one message each: the progress made way


def test_every_instrument_pick_fits_telegram_s_callback_data_and_reaches_its_handler():
    rows = instrument_picker(10**12 - 1, favourite=True)
    assert all(len(b.data.encode()) <= 64 and INSTRUMENT_DATA.match(b.data) for row in rows for b in row)


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


async def test_in_a_group_the_favourite_button_turns_each_presser_s_own_favourite_over(env):
    """A group's buttons are everyone's and cannot show each member their state: each press turns
    the presser's own favourite over, and the keyboard is left alone."""
    track_id = await stored_track(env)
    for n in (1, 2):
        env.press(f"fav:{track_id}", 1, under=post_in(-100700, "supergroup"))
        await env.stub.wait_for("answerCallbackQuery", count=n)
    answers = [c.params.get("text", "") for c in env.stub.calls_to("answerCallbackQuery")]
    assert answers == ["⭐ Added to your favourites", "Removed from your favourites"]
    assert await env.count(Favorite) == 0 and not env.stub.calls_to("editMessageReplyMarkup")
    press = env.press(f"fav:{track_id}", 1, under=post_in(-100700, "supergroup"))
    env.stub.queue_update(press)  # Telegram delivers the same press again
    await env.stub.wait_for("answerCallbackQuery", count=4)
    assert await env.count(Favorite) == 1  # turned over once, not twice


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


def private(sent) -> dict:
    """A message the bot sent into user 1's private chat, as a press under it carries it."""
    return {**sent.result, "chat": {"id": 1, "type": "private", "first_name": "Ada"}}


async def test_history_pages_turn_with_buttons_that_edit_the_list(env):
    ids = [await stored_track(env, seed=i) for i in range(23)]
    env.send("/history")
    [page1] = await env.stub.wait_for("sendMessage")
    assert page1.buttons == ["page:history:2"]  # no ◀ on the first page
    env.press("page:history:2", under=private(page1))
    [page2] = await env.stub.wait_for("editMessageText")
    assert page2.params["message_id"] == str(page1.result["message_id"])
    assert f"#{ids[12]} " in page2.params["text"] and f"#{ids[13]} " not in page2.params["text"]
    assert page2.buttons == ["page:history:1", "page:history:3"]
    env.press("page:history:3", under=private(page1))
    page3 = (await env.stub.wait_for("editMessageText", count=2))[-1]
    assert f"#{ids[0]} " in page3.params["text"] and page3.buttons == ["page:history:2"]
    env.press("page:history:1", under=private(page1))
    back = (await env.stub.wait_for("editMessageText", count=3))[-1]
    assert back.params["text"] == page1.params["text"]
    assert len(env.stub.calls_to("sendMessage")) == 1  # turning pages posts nothing new


async def test_favourites_pages_have_buttons_too(env):
    ids = [await stored_track(env, seed=i) for i in range(11)]
    for track_id in ids:
        await favourite(env, "1", track_id)
    env.send("/favorites")
    [page1] = await env.stub.wait_for("sendMessage")
    assert page1.buttons == ["page:favorites:2"]
    env.press("page:favorites:2", under=private(page1))
    [page2] = await env.stub.wait_for("editMessageText")
    assert "Your favourites (page 2)" in page2.params["text"] and page2.buttons == ["page:favorites:1"]


async def test_settings_are_a_button_menu_and_a_press_stores_the_default(env):
    env.send("/settings")
    [menu] = await env.stub.wait_for("sendMessage")
    assert menu.buttons == ["settings:genre", "settings:temp", "settings:len", "settings:inst"]
    env.press("settings:inst", under=private(menu))
    [choices] = await env.stub.wait_for("editMessageReplyMarkup")
    assert "set:inst:electric_piano" in choices.buttons and choices.buttons[-1] == "settings:menu"
    env.press("set:inst:electric_piano", under=private(menu))
    [saved] = await env.stub.wait_for("editMessageText")
    assert "instrument: electric piano" in saved.params["text"] and saved.buttons == menu.buttons
    for n, data in enumerate(("set:genre:jazz", "set:temp:1.2", "set:len:90"), 2):
        env.press(data, under=private(menu))
        await env.stub.wait_for("editMessageText", count=n)
    user = await env.db.run(lambda s: s.scalar(select(User)))
    assert (user.default_genre, user.default_temperature, user.default_seconds) == ("jazz", 1.2, 90)
    assert user.default_instrument == "electric piano"
    env.press("set:temp:9.9", under=private(menu))  # forged: out of range
    alert = (await env.stub.wait_for("answerCallbackQuery", count=6))[-1]
    assert alert.params["show_alert"] == "true" and "temp" in alert.params["text"]
    assert (await env.db.run(lambda s: s.scalar(select(User)))).default_temperature == 1.2


async def test_share_into_a_channel_reuses_the_uploaded_file(env):
    env.stub.member_status, env.stub.can_post_messages = "administrator", True
    track_id = await stored_track(env, file_id="CACHED-FILE-ID")
    env.send(f"/share {track_id} @mychannel")
    [audio] = await env.stub.wait_for("sendAudio")
    assert audio.chat_id == "@mychannel" and audio.params["audio"] == "CACHED-FILE-ID" and not audio.files
    [member] = env.stub.calls_to("getChatMember")
    assert member.chat_id == "@mychannel" and member.params["user_id"] == "1"
    await env.stub.wait_for("sendMessage")
    assert "Shared" in env.stub.calls_to("sendMessage")[-1].params["text"]
    assert await env.count(Share, Share.track_id == track_id) == 1


@pytest.mark.parametrize(
    ("kind", "status", "can_post", "answer"),
    [
        ("channel", "member", False, "an admin of the channel who may post"),  # a subscriber
        ("channel", "administrator", False, "an admin of the channel who may post"),
        ("channel", "left", False, "an admin of the channel who may post"),
        ("supergroup", "left", False, "a member who may write"),
        ("supergroup", "kicked", False, "a member who may write"),
    ],
)
async def test_sharing_needs_the_right_to_post_there(env, kind, status, can_post, answer):
    env.stub.member_status, env.stub.can_post_messages = status, can_post
    env.stub.chat_types["@mychannel"] = kind
    track_id = await stored_track(env)
    env.send(f"/share {track_id} @mychannel")
    [reply] = await env.stub.wait_for("sendMessage")
    assert f"To share into @mychannel you need to be {answer} there" in reply.params["text"]
    assert not env.stub.calls_to("sendAudio") and await env.count(Share) == 0


async def test_a_group_member_may_share_into_the_group(env):
    env.stub.chat_types["-100777"] = "supergroup"  # member_status is "member"
    track_id = await stored_track(env, file_id="CACHED-FILE-ID")
    env.send(f"/share {track_id} -100777")
    [audio] = await env.stub.wait_for("sendAudio")
    assert audio.chat_id == "-100777"
    assert await eventually(lambda: env.count(Share, Share.track_id == track_id)) == 1


BAD_INPUT = [
    ("/compose polka", "don't know the genre"),
    ("/compose jazz temp=abc", "temp must be a number"),
    ("/compose jazz len=999999", "len must be from 5 to 180"),
    ("/compose " + "x" * 4000, "too long"),
    (f"/compose@{BOT_USERNAME} polka", "don't know the genre"),
    ("/compose", "Pick a genre"),  # with genre buttons: test_a_bare_compose_offers_genre_buttons
    ("/continue 999", "there is no track #999"),
    ("/continue", "reply /continue to a MIDI file"),
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
    assert texts[0] == f"🤔 there is no track #{someone_elses} of yours or shared here"
    assert texts[1] == "🤔 there is no track #9999 of yours or shared here"  # the same words: ids cannot be probed
    assert "out of date" in texts[3]
    assert await env.count(Job) == 0 and await env.count(Favorite) == 0
    assert not env.stub.calls_to("sendAudio")


async def test_a_bare_compose_offers_genre_buttons_and_a_press_composes_it(env):
    request = env.send("/compose")
    [question] = await env.stub.wait_for("sendMessage")
    assert question.buttons == ["compose:classic", "compose:jazz", "compose:calm", "compose:pop"]
    assert question.replied_to == request["message"]["message_id"] and await env.count(Job) == 0
    under = {**question.result, "chat": {"id": 1, "type": "private", "first_name": "Ada"}}
    press = env.press("compose:jazz", under=under)
    env.stub.queue_update(press)  # delivered twice: still one track
    [_, progress] = await env.stub.wait_for("sendMessage", count=2)
    assert progress.params["text"].startswith("⏳") and progress.replied_to == question.result["message_id"]
    [picked] = await env.stub.wait_for("editMessageText", message_id=str(question.result["message_id"]))
    assert picked.params["text"] == "🎼 Jazz" and not picked.buttons
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    assert audio.params["title"].startswith("Jazz #") and await env.count(Job) == 1
    env.press("compose:polka", under=under)  # not a genre of ours
    assert "out of date" in (await env.stub.wait_for("answerCallbackQuery", count=3))[-1].params["text"]


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
    [_, question] = await env.stub.wait_for("sendMessage", count=2)
    assert question.buttons == ["forgetme:confirm:1", "forgetme:keep:1"]
    assert await env.count(Track) == 1  # nothing goes before the answer
    env.press("forgetme:confirm:1", user_id=2)  # someone else in the chat pressing it
    refusal = (await env.stub.wait_for("answerCallbackQuery", count=2))[-1]
    assert "someone else" in refusal.params["text"] and await env.count(Track) == 1
    env.press("forgetme:keep:1")
    [kept] = await env.stub.wait_for("editMessageText")
    assert "Kept everything" in kept.params["text"] and await env.count(Track) == 1
    env.press("forgetme:confirm:1")
    [_, done] = await env.stub.wait_for("editMessageText", count=2)
    assert "1 track." in done.params["text"]
    assert await env.count(Track) == 0 and await env.count(Favorite) == 0


def test_run_telegram_without_a_token_is_a_one_line_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from melomania.cli import app

    monkeypatch.chdir(tmp_path)  # a .env of the developer's is not read
    monkeypatch.delenv("MELOMANIA_TELEGRAM_TOKEN", raising=False)
    result = CliRunner().invoke(app, ["run", "telegram"])
    assert (
        result.exit_code == 2
        and "no Telegram bot token: set MELOMANIA_TELEGRAM_TOKEN in the environment or in .env" in result.output
    )
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


async def test_updates_are_handled_concurrently_and_each_sender_s_in_order(env):
    """A slow chat holds up only its own sender: another's update is answered meanwhile, and
    the slow sender's second command waits for their first."""
    env.stub.slow["1"] = 1.5  # every message to user 1 takes 1.5 s to post
    first, second = env.stub.message("/genres", 1), env.stub.message("/help", 1)
    other = env.stub.message("/genres", 2)
    env.stub.queue_update(*({"update_id": next(env.ids), "message": m} for m in (first, second, other)))
    sent = await env.stub.wait_for("sendMessage", count=3)
    by_chat = {c.chat_id: [] for c in sent}
    for c in sent:
        by_chat[c.chat_id].append(c)
    genres, help_ = by_chat["1"]
    [theirs] = by_chat["2"]
    assert genres.params["text"].startswith("Genres:") and "I compose piano music" in help_.params["text"]
    assert help_.at - genres.at >= 1.4  # user 1's /help waited for their /genres to be answered
    assert theirs.at < help_.at and theirs.at - genres.at < 1.0  # user 2 did not wait for user 1


async def test_a_network_error_from_telegram_is_retried_with_backoff(env):
    env.stub.outage["sendAudio"] = 2  # Telegram's side answers 502 twice, then recovers
    env.send("/compose ambient len=5")
    calls = await env.stub.wait_for("sendAudio", count=3, timeout=60)
    assert calls[0].params["title"] == calls[2].params["title"]
    assert len(env.stub.calls_to("sendAudio")) == 3 and await env.count(Track) == 1


async def test_compose_addressed_to_the_bot_in_a_group_is_posted_in_the_group(env):
    env.send(f"/compose@{BOT_USERNAME} ambient len=5", user_id=5, chat_id=-100321, kind="supergroup")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    assert audio.chat_id == "-100321"
    track = await env.track(track_id_of(audio))
    assert track.genre == "calm"
    # Posted in the group, the track is shared there: another member's press under it composes.
    env.press(f"reroll:{track.id}", 6, under=post_in(-100321, "supergroup"))
    [answer] = await env.stub.wait_for("answerCallbackQuery")
    assert answer.params["text"].startswith("🔁") and await env.count(Job) == 2


# --- inline mode -------------------------------------------------------------------------------


async def favourite(env: Env, owner: str, track_id: int) -> None:
    async def add(s):
        await add_favorite(s, await get_or_create_user(s, "telegram", owner), track_id)

    await env.db.run(add)


async def test_inline_query_offers_only_my_uploaded_favourites(env):
    ambient = await stored_track(env, file_id="FILE-AMBIENT")
    jazz = await stored_track(env, file_id="FILE-JAZZ", genre="jazz")
    not_uploaded = await stored_track(env)
    not_a_favourite = await stored_track(env, file_id="FILE-OTHER")
    someone_elses = await stored_track(env, owner="2", file_id="FILE-THEIRS")
    for track_id in (ambient, jazz, not_uploaded):
        await favourite(env, "1", track_id)
    await favourite(env, "2", someone_elses)

    for n, query in enumerate(("", "jazz", f"#{ambient}", "polka"), 1):
        env.inline(query)
        await env.stub.wait_for("answerInlineQuery", count=n)
    everything, jazz_only, by_number, unreadable = env.stub.calls_to("answerInlineQuery")

    results = everything.json("results")
    assert [(r["type"], r["id"], r["audio_file_id"]) for r in results] == [
        ("audio", str(jazz), "FILE-JAZZ"),  # newest favourite first
        ("audio", str(ambient), "FILE-AMBIENT"),
    ]
    assert results[1]["caption"].startswith(f"Ambient #{ambient}")
    assert everything.params["is_personal"] == "true" and int(everything.params["cache_time"]) <= 60
    assert "1 favourite can't be sent" in everything.json("button")["text"]  # the one never uploaded
    assert str(not_a_favourite) not in {r["id"] for r in results}
    assert [r["id"] for r in jazz_only.json("results")] == [str(jazz)]
    assert [r["id"] for r in by_number.json("results")] == [str(ambient)]
    assert unreadable.json("results") == [] and "Type a genre" in unreadable.json("button")["text"]

    env.inline("", user_id=2)
    theirs = (await env.stub.wait_for("answerInlineQuery", count=5))[-1]
    assert [r["id"] for r in theirs.json("results")] == [str(someone_elses)]
    env.inline("", user_id=3)  # nobody we know: nothing, and no account made for them
    stranger = (await env.stub.wait_for("answerInlineQuery", count=6))[-1]
    assert stranger.json("results") == [] and "No favourites yet" in stranger.json("button")["text"]
    assert await env.count(User, User.platform_user_id == "3") == 0
    assert stranger.json("button")["start_parameter"] == "favorites"
    env.send("/start favorites")  # where that button leads: the favourites, listed
    [listing] = await env.stub.wait_for("sendMessage")
    assert listing.params["text"].startswith("Your favourites") and f"#{not_uploaded} " in listing.params["text"]


async def test_share_s_chat_picker_finds_the_sharers_own_track_favourite_or_not_and_nobody_elses(env):
    mine = await stored_track(env, file_id="FILE-MINE")  # uploaded, never a favourite
    not_uploaded = await stored_track(env)
    theirs = await stored_track(env, owner="2", file_id="FILE-THEIRS")
    for n, (query, user) in enumerate(((f"#{mine}", 1), (f"#{not_uploaded}", 1), (f"#{theirs}", 1)), 1):
        env.inline(query, user_id=user)
        await env.stub.wait_for("answerInlineQuery", count=n)
    found, unsendable, forbidden = env.stub.calls_to("answerInlineQuery")
    assert [(r["id"], r["audio_file_id"]) for r in found.json("results")] == [(str(mine), "FILE-MINE")]
    assert unsendable.json("results") == [] and forbidden.json("results") == []


# --- /continue in reply to a MIDI file ---------------------------------------------------------


def midi_file(notes: int = 24) -> bytes:
    pm = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    for i in range(notes):
        piano.notes.append(pretty_midi.Note(velocity=80, pitch=60 + i % 12, start=i * 0.4, end=i * 0.4 + 0.35))
    pm.instruments.append(piano)
    out = io.BytesIO()
    pm.write(out)
    return out.getvalue()


async def test_replying_continue_to_a_midi_file_primes_a_new_track_with_it(env):
    tune = env.stub.document(midi_file(), name="my tune.mid")
    env.reply("/continue jazz", to=tune)
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    track = await env.track(track_id_of(audio))
    assert track.genre == "jazz" and track.lineage == "continue"
    assert track.primer_ref == f"telegram-file:{tune['document']['file_unique_id']}"
    job = await env.db.run(lambda s: s.scalar(select(Job)))
    assert len(job.request["primer"]) > 20 and job.request["primer_ref"] == track.primer_ref
    [get_file] = env.stub.calls_to("getFile")
    assert get_file.params["file_id"] == tune["document"]["file_id"]
    [download] = env.stub.calls_to("download")
    assert download.params["path"].endswith(f"/{tune['document']['file_id']}.mid")


async def test_continue_on_a_midi_file_uses_my_default_genre_or_asks_for_one(env):
    tune = env.stub.document(midi_file())
    env.reply("/continue", to=tune)
    [question] = await env.stub.wait_for("sendMessage")
    assert "which genre" in question.params["text"] and "jazz" in question.params["text"]
    assert not env.stub.calls_to("getFile")  # nothing downloaded before we know what to do
    env.send("/settings genre=classic")
    await env.stub.wait_for("sendMessage", count=2)
    env.reply("/continue", to=tune)
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    assert (await env.track(track_id_of(audio))).genre == "classic"


async def test_bad_midi_files_get_a_clear_answer_and_compose_nothing(env):
    silent = io.BytesIO()
    pretty_midi.PrettyMIDI().write(silent)
    cases = [
        (env.stub.document(b"%PDF-1.4", name="notes.pdf", mime="application/pdf"), "/continue jazz", "isn't MIDI"),
        (env.stub.document(b"MThd" + b"\0" * 1_000_000), "/continue jazz", "send one up to 1 MB"),
        (env.stub.document(b"RIFF not midi", name="song.mid"), "/continue jazz", "not a MIDI file"),
        (env.stub.document(midi_file()), "/continue polka", "don't know the genre"),
        (env.stub.document(midi_file()), "/continue jazz now", "reply /continue or /continue jazz"),
        (env.stub.document(midi_file()[:60]), "/continue jazz", "cut short: it ends inside a track"),
        (env.stub.document(silent.getvalue()), "/continue jazz", "has no notes I can continue"),
    ]
    for n, (doc, text, answer) in enumerate(cases, 1):
        env.reply(text, to=doc)
        replies = await env.stub.wait_for("sendMessage", count=n)
        assert answer in replies[-1].params["text"], answer
        assert "()" not in replies[-1].params["text"]
    read = [cases[i][0]["document"]["file_id"] for i in (2, 5, 6)]  # only those that could be MIDI were read
    assert [c.params["file_id"] for c in env.stub.calls_to("getFile")] == read
    assert await env.count(Job) == 0


async def test_a_midi_file_over_the_limit_is_refused_by_size_also_when_its_message_gives_none(env):
    """Telegram's file_size is optional: without it in the message, getFile's decides before any
    download; without either, the download stops once it passes the limit."""
    no_size = env.stub.document(b"MThd" + b"\0" * 1_500_000, sized=(False, True))
    env.reply("/continue jazz", to=no_size)
    [refusal] = await env.stub.wait_for("sendMessage")
    assert "that MIDI file is 1.5 MB; send one up to 1 MB" in refusal.params["text"]
    assert not env.stub.calls_to("download")  # refused before downloading a byte

    huge = b"MThd" + b"\0" * 32_000_000
    never_sized = env.stub.document(huge, sized=(False, False))
    env.reply("/continue jazz", to=never_sized)
    [_, refusal] = await env.stub.wait_for("sendMessage", count=2)
    assert "that MIDI file is over 1 MB; send one up to 1 MB" in refusal.params["text"]
    file_id = never_sized["document"]["file_id"]
    await eventually(lambda: asyncio.sleep(0, result=file_id in env.stub.served))
    assert env.stub.served[file_id] < len(huge) // 2  # the reader left early: the rest was never sent

    fits = env.stub.document(midi_file(), sized=(False, False))
    env.reply("/continue jazz", to=fits)
    await eventually(lambda: env.count(Job))  # a file under the limit still goes through
    assert await env.count(Job) == 1


# --- rate limits -------------------------------------------------------------------------------


async def test_rate_limits_per_user_and_per_chat_answer_politely(tmp_path):
    limits = Limits(per_user=RateLimiter(1, 60.0), per_chat=RateLimiter(2, 60.0))
    async with bot_env(tmp_path, limits=limits) as env:
        group = {"chat_id": -100, "kind": "group"}
        env.send("/compose ambient len=5", 1, **group)
        await env.stub.wait_for("sendMessage", text="⏳ In the queue…")
        env.send("/compose ambient len=5", 1, **group)
        too_fast = (await env.stub.wait_for("sendMessage", count=2))[-1]
        assert too_fast.params["text"].startswith("🙅 easy there") and too_fast.chat_id == "-100"
        env.press(f"hotter:{await stored_track(env)}")
        [alert] = await env.stub.wait_for("answerCallbackQuery")
        assert "easy there" in alert.params["text"] and alert.params["show_alert"] == "true"
        env.send("/compose ambient len=5", 2, **group)  # another user: the chat's second track
        await env.stub.wait_for("sendMessage", count=2, text="⏳ In the queue…")
        env.send("/compose ambient len=5", 3, **group)  # a third: the chat has had its two
        busy_chat = (await env.stub.wait_for("sendMessage", count=4))[-1]
        assert busy_chat.params["text"].startswith("🙅 this chat is composing a lot")
        assert await env.count(Job) == 2


# --- resuming delivery after a restart ---------------------------------------------------------


async def test_jobs_left_unfinished_by_a_restart_are_delivered_to_their_chats(tmp_path):
    async with between_starts(tmp_path) as env:
        stub, db, store = env.stub, env.db, env.store
        async with running_bot(stub, db, store, compose=False) as app:  # accepts, never composes
            await app.updater.start_polling(timeout=1)
            request = env.send("/compose ambient len=5")
            await stub.wait_for("sendMessage")
            reply_to = await eventually(lambda: _reply_to(db, 1))
            runner = app.bot_data["core"].backend
            # one the process accepted but died before posting its progress message; one of Discord's
            await runner.submit(ComposeRequest("telegram", "2", "jazz", seconds=5, reply_to={"chat_id": 2}))
            await runner.submit(ComposeRequest("discord", "9", "pop", seconds=5, reply_to={"chat_id": 3}))
        progress_id = reply_to["message_id"]
        request_id = request["message"]["message_id"]  # the track will answer the command
        assert reply_to == {"chat_id": 1, "message_id": progress_id, "request_id": request_id}
        assert stub.calls_to("sendMessage")[0].params["text"].startswith("⏳")
        await db.run(lambda s: start_job(s, 1))  # it had started composing when the process died
        assert not stub.calls_to("sendAudio")

        async with running_bot(stub, db, store) as app:  # a fresh process on the same database
            await app.updater.start_polling(timeout=1)
            audios = await stub.wait_for("sendAudio", count=2, timeout=60)
            await asyncio.sleep(0.5)
        assert sorted(a.chat_id for a in stub.calls_to("sendAudio")) == ["1", "2"]
        assert next(a for a in audios if a.chat_id == "1").replied_to == request_id
        edits = [e for e in stub.calls_to("editMessageText") if e.params["chat_id"] == "1"]
        assert {e.params["message_id"] for e in edits} <= {str(progress_id)}
        assert [d.params["message_id"] for d in stub.calls_to("deleteMessage") if d.chat_id == "1"] == [
            str(progress_id)
        ]
        new_progress = [m for m in stub.calls_to("sendMessage") if m.chat_id == "2"]
        assert len(new_progress) == 1 and new_progress[0].params["text"].startswith("⏳")
        assert not [c for c in stub.calls if c.chat_id == "3"]  # Discord's job is Discord's to deliver
        states = await db.run(lambda s: s.scalars(select(Job.state).where(Job.id.in_((1, 2)))))
        assert list(states) == [JobState.done, JobState.done]
        assert {a.params["title"].split(" #")[0] for a in audios} == {"Ambient", "Jazz"}


async def test_jobs_that_ended_while_the_bot_was_away_are_delivered_once(tmp_path):
    """A job a worker finished (or failed) while no bot ran is delivered when one starts, and
    only then: the receipt keeps the next start from sending it again."""
    from storage.jobs import fail_job

    stub = BotApiStub().start()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.create_all()
    store = LocalArtifactStore(tmp_path / "artifacts")
    try:
        worker = InProcessRunner(db, store, runner_model)  # composing elsewhere, no bot running
        await worker.start()
        try:
            done = await worker.submit(
                ComposeRequest("telegram", "7", "jazz", tokens=60, reply_to={"chat_id": 7, "message_id": 70})
            )
            async for _event in worker.events(done):
                pass
        finally:
            await worker.stop()
        failed = await worker.submit(
            ComposeRequest("telegram", "8", "pop", tokens=60, reply_to={"chat_id": 8, "message_id": 80})
        )
        await db.run(lambda s: start_job(s, failed))
        await db.run(lambda s: fail_job(s, failed, "the composer hit an error"))

        async with running_bot(stub, db, store):
            [audio] = await stub.wait_for("sendAudio", timeout=60)
            for job_id in (done, failed):
                await eventually(lambda j=job_id: _delivered(db, j))
        assert audio.chat_id == "7" and audio.params["title"].startswith("Jazz")
        edits = {
            (e.params["chat_id"], e.params["message_id"]): e.params["text"] for e in stub.calls_to("editMessageText")
        }
        assert ("7", "70") not in edits and [
            (d.chat_id, d.params["message_id"]) for d in stub.calls_to("deleteMessage")
        ] == [("7", "70")]
        assert "the composer hit an error" in edits[("8", "80")]

        async with running_bot(stub, db, store):  # started again: nothing is sent twice
            await asyncio.sleep(1.0)
        assert len(stub.calls_to("sendAudio")) == 1
        assert len([e for e in stub.calls_to("editMessageText") if e.params["chat_id"] == "8"]) == 1
    finally:
        await db.dispose()
        stub.stop()


async def _delivered(db: Database, job_id: int) -> bool:
    job = await db.run(lambda s: s.get(Job, job_id))
    return job is not None and job.delivered_at is not None


async def _reply_to(db: Database, job_id: int) -> dict | None:
    """The job's reply_to once it names the progress message."""
    job = await db.run(lambda s: s.get(Job, job_id))
    reply_to = job.request.get("reply_to") if job else None
    return reply_to if reply_to and "message_id" in reply_to else None


# --- webhook -----------------------------------------------------------------------------------


def test_webhook_settings_choose_polling_or_a_webhook():
    assert webhook_from(None) is None and webhook_from("  ") is None  # long polling by default
    hook = webhook_from("https://bot.example.org/tg/hook", "0.0.0.0", 8080, "s3cret_-")
    assert hook.run_options() == {
        "listen": "0.0.0.0",
        "port": 8080,
        "url_path": "tg/hook",
        "webhook_url": "https://bot.example.org/tg/hook",
        "secret_token": "s3cret_-",
    }
    assert "s3cret" not in repr(hook)
    generated = {webhook_from("https://bot.example.org/").secret_token for _ in range(2)}
    assert len(generated) == 2 and all(len(s) >= 32 for s in generated)  # a fresh one each start
    for url, secret, problem in [
        ("http://bot.example.org/hook", None, "https"),
        ("bot.example.org/hook", None, "https"),
        ("https://bot.example.org:5000/hook", None, "port 443, 80, 88 or 8443"),
        ("https://bot.example.org/hook", "not allowed!", "A-Z, a-z, 0-9"),
    ]:
        with pytest.raises(UsageError, match=problem) as caught:
            webhook_from(url, secret=secret)
        assert "not allowed" not in str(caught.value) and "example.org" not in str(caught.value)


def test_run_telegram_with_a_bad_webhook_setting_is_a_one_line_error(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from melomania.cli import app

    monkeypatch.chdir(tmp_path)  # a .env of the developer's is not read
    monkeypatch.setenv("MELOMANIA_TELEGRAM_TOKEN", "123456:ABC-def")
    monkeypatch.setenv("MELOMANIA_TELEGRAM_WEBHOOK_URL", "http://bot.example.org/hook")
    result = CliRunner().invoke(app, ["run", "telegram"])
    assert result.exit_code == 2 and "https" in result.output
    assert len(result.output.strip().splitlines()) == 1
    monkeypatch.setenv("MELOMANIA_TELEGRAM_WEBHOOK_URL", "https://bot.example.org/hook")
    monkeypatch.setenv("MELOMANIA_TELEGRAM_WEBHOOK_SECRET", "hunter2 has spaces")
    result = CliRunner().invoke(app, ["run", "telegram"])
    assert result.exit_code == 2 and "MELOMANIA_TELEGRAM_WEBHOOK_SECRET may hold only" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "hunter2" not in result.output


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, update: dict, secret: str) -> int:
    request = urllib.request.Request(
        url,
        json.dumps(update).encode(),
        {"Content-Type": "application/json", "X-Telegram-Bot-Api-Secret-Token": secret},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


async def test_updates_arrive_by_webhook_only_with_the_secret(tmp_path):
    stub = BotApiStub().start()
    db = Database(f"sqlite+aiosqlite:///{tmp_path / 'bot.db'}")
    await db.create_all()
    port = free_port()
    hook = webhook_from("https://bot.example.org/tg/hook", "127.0.0.1", port, "s3cret")
    try:
        async with running_bot(stub, db, LocalArtifactStore(tmp_path / "a"), compose=False) as app:
            await app.updater.start_webhook(**hook.run_options())
            [registered] = stub.calls_to("setWebhook")
            assert registered.params["url"] == hook.url and registered.params["secret_token"] == "s3cret"
            url = f"http://127.0.0.1:{port}/tg/hook"
            forged = {"update_id": 1, "message": stub.message("/genres")}
            assert await asyncio.to_thread(post, url, forged, "guess") == 403
            genuine = {"update_id": 2, "message": stub.message("/genres")}
            assert await asyncio.to_thread(post, url, genuine, "s3cret") == 200
            [reply] = await stub.wait_for("sendMessage")
            assert "Genres:" in reply.params["text"]
            await asyncio.sleep(0.3)
            assert len(stub.calls_to("sendMessage")) == 1  # the forged update was never handled
    finally:
        await db.dispose()
        stub.stop()


async def test_in_a_channel_only_those_who_may_post_compose_with_the_buttons(env):
    """A channel's subscribers see a shared track's buttons too; their presses must not make the
    bot post into the channel."""
    track_id = await shared_track(env, -100555)
    post = post_in(-100555, "channel")
    env.press(f"hotter:{track_id}", 2, under=post)  # a subscriber: getChatMember says "member"
    [answer] = await env.stub.wait_for("answerCallbackQuery")
    assert (
        answer.params["show_alert"] in (True, "true", "True") and "Only the channel's posters" in answer.params["text"]
    )
    assert await env.count(Job) == 0 and not env.stub.calls_to("sendMessage")

    env.stub.member_status, env.stub.can_post_messages = "administrator", True
    env.press(f"hotter:{track_id}", 3, under=post)  # an admin who may post
    [progress] = await env.stub.wait_for("sendMessage")
    assert progress.chat_id == "-100555"
    assert await env.count(Job) == 1


async def test_in_a_group_my_history_goes_to_my_private_chat(env):
    track_id = await stored_track(env)
    env.send("/history", user_id=1, chat_id=-100900, kind="group")
    sent = await env.stub.wait_for("sendMessage", count=2)
    private = next(m for m in sent if m.chat_id == "1")
    assert f"#{track_id} " in private.params["text"]
    group = next(m for m in sent if m.chat_id == "-100900")
    assert f"#{track_id}" not in group.params["text"] and "private chat" in group.params["text"]

    env.stub.unreachable.add("2")  # never opened a chat with the bot
    await stored_track(env, owner="2")
    env.send("/history", user_id=2, chat_id=-100900, kind="group")
    answer = (await env.stub.wait_for("sendMessage", count=4))[-1]
    assert answer.chat_id == "-100900" and "open a chat with me" in answer.params["text"]


@pytest.mark.parametrize(
    ("sender", "sender_chat"),
    [
        (1087968824, {"id": -100800, "type": "supergroup", "title": "g"}),  # an anonymous admin
        (136817688, {"id": -100555, "type": "channel", "title": "c"}),  # someone posting as a channel
    ],
)
async def test_a_sender_telegram_hides_is_refused_and_owns_nothing(env, sender, sender_chat):
    """Every anonymous admin (and everyone posting as a channel) arrives as one shared id: served,
    they would share one account and could continue, cancel or delete each other's tracks."""
    track_id = await stored_track(env, owner=str(sender))  # as if composed before this guard
    for text in ("/compose ambient len=5", f"/continue {track_id}", "/forgetme", "just chatting", "/help@another_bot"):
        message = env.stub.message(text, sender, chat_id=-100800, kind="supergroup")
        message["sender_chat"] = sender_chat
        env.stub.queue_update({"update_id": next(env.ids), "message": message})
    replies = await env.stub.wait_for("sendMessage", count=3)
    await asyncio.sleep(0.3)  # the plain message and the command for another bot get no answer at all
    assert len(env.stub.calls_to("sendMessage")) == 3
    assert all("Remain anonymous" in r.params["text"] for r in replies)
    assert await env.count(Job) == 0 and await env.count(Track) == 1


async def test_a_group_member_posting_as_themselves_is_served(env):
    env.send("/genres", user_id=5, chat_id=-100800, kind="supergroup")
    [reply] = await env.stub.wait_for("sendMessage")
    assert reply.params["text"].startswith("Genres:")


async def test_in_a_group_a_muted_member_s_press_does_not_make_the_bot_post(env):
    track_id = await shared_track(env, -100700)
    post = post_in(-100700, "supergroup")
    env.stub.member_status = "restricted"
    env.press(f"reroll:{track_id}", 2, under=post)
    [answer] = await env.stub.wait_for("answerCallbackQuery")
    assert "Only members who may post here" in answer.params["text"]
    assert await env.count(Job) == 0 and not env.stub.calls_to("sendMessage")
    env.stub.member_status = "member"
    env.press(f"reroll:{track_id}", 2, under=post)
    [progress] = await env.stub.wait_for("sendMessage")
    assert progress.chat_id == "-100700" and await env.count(Job) == 1


async def test_in_a_group_only_members_who_may_post_open_the_instrument_picker_or_pick(env):
    track_id = await shared_track(env, -100700)
    post = post_in(-100700, "supergroup")
    env.stub.member_status = "restricted"
    env.press(f"inst:{track_id}", 2, under=post)  # the keyboard is everyone's: not theirs to change
    env.press(f"inst:{track_id}:organ", 2, under=post)
    answers = await env.stub.wait_for("answerCallbackQuery", count=2)
    assert all("Only members who may post here" in a.params["text"] for a in answers)
    assert not env.stub.calls_to("editMessageReplyMarkup") and await env.count(Job) == 0
    env.stub.member_status = "member"
    env.press(f"inst:{track_id}:organ", 2, under=post)  # the track was shared here: any member may
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    child = await env.track(track_id_of(audio))
    assert audio.chat_id == "-100700" and (child.instrument, child.parent_id) == ("organ", track_id)


@pytest.mark.parametrize("offset", ["²", "9" * 40])
async def test_an_inline_offset_no_client_of_ours_sends_still_gets_an_answer(env, offset):
    env.stub.queue_update({"update_id": next(env.ids), "inline_query": env.stub.inline("", 1, offset=offset)})
    await env.stub.wait_for("answerInlineQuery")


# --- the user's language -----------------------------------------------------------------------


async def test_a_russian_speaking_user_is_answered_in_russian(env):
    """Telegram's language_code picks the texts: the command list, the genre picker, a usage error
    naming the range, the track's progress, caption and buttons. Command words stay English."""
    env.stub.languages[1] = "ru"
    [english, russian] = env.stub.calls_to("setMyCommands")
    assert "language_code" not in english.params and russian.params["language_code"] == "ru"
    assert {c["command"]: c["description"] for c in russian.json("commands")}[
        "genres"
    ] == "жанры, которые можно заказать"
    env.send("/compose")
    [picker] = await env.stub.wait_for("sendMessage")
    assert picker.params["text"].startswith("🎼 Выберите жанр")
    assert picker.labels == ["Классика", "Джаз", "Эмбиент", "Поп"]
    assert picker.buttons == ["compose:classic", "compose:jazz", "compose:calm", "compose:pop"]
    env.send("/compose jazz temp=5")
    usage = (await env.stub.wait_for("sendMessage", count=2))[-1]
    assert usage.params["text"] == "🤔 значение temp должно быть от 0.1 до 2, а не 5 (например, temp=0.9)"

    env.send("/compose ambient len=5")
    [audio] = await env.stub.wait_for("sendAudio", timeout=60)
    assert env.stub.calls_to("sendMessage")[2].params["text"] == "⏳ В очереди…"
    track_id = track_id_of(audio)
    assert audio.params["title"] == f"Эмбиент #{track_id}" and audio.params["caption"].startswith(
        f"Эмбиент #{track_id}"
    )
    labels = ["🔁 Переиграть", "🔥 Горячее", "❄️ Холоднее", "⭐ В избранное", "➕ Продолжить", "📤 Поделиться"]
    assert audio.labels == [*labels, "🎹 Инструмент", "🎼 Фортепиано соло", "⋯ Ещё"]  # ambient: a band, by default
    env.press(f"fav:{track_id}")
    [favourite] = await env.stub.wait_for("answerCallbackQuery")
    assert favourite.params["text"] == "⭐ Добавлено в избранное"


async def test_a_russian_speaking_user_s_candidates_come_with_a_russian_picker(env):
    """count=2: the one progress message, the album's captions and the Keep picker in Russian; a
    Russian-speaking stranger's pick is refused in Russian."""
    env.stub.languages |= {1: "ru", 2: "ru"}
    request = env.send("/compose ambient len=5 count=2")
    [album] = await env.stub.wait_for("sendMediaGroup", timeout=90)
    [progress, picker] = await env.stub.wait_for("sendMessage", count=2)
    assert progress.params["text"] == "⏳ В очереди…"
    edits = [e.params["text"] for e in env.stub.calls_to("editMessageText")]
    assert edits and all(e.endswith(("(2 варианта)", " из 2")) for e in edits), edits  # "готово 0 из 2"
    assert picker.params["text"] == "👆 Выберите, какой оставить (остальные останутся в /history)"
    assert picker.labels == ["Оставить 1", "Оставить 2"]
    assert [m["caption"].split(" #")[0] for m in album.json("media")] == ["1 · Эмбиент", "2 · Эмбиент"]
    env.press(picker.buttons[0], user_id=2, under=private(picker) | {"reply_to_message": request["message"]})
    [refused] = await env.stub.wait_for("answerCallbackQuery")
    assert refused.params["text"] == "🤔 выбрать может только тот, кто попросил эти треки"


async def test_other_languages_and_none_are_answered_in_english(env):
    env.stub.languages |= {1: "en", 2: "de"}  # user 3's app sends no language_code
    for n, user_id in enumerate((1, 2, 3), 1):
        env.send("/compose jazz temp=5", user_id)
        [*_, usage] = await env.stub.wait_for("sendMessage", count=n)
        assert usage.params["text"] == "🤔 temp must be from 0.1 to 2, not 5 (for example temp=0.9)", user_id


async def test_a_job_resumed_after_a_restart_is_delivered_in_its_user_s_language(tmp_path):
    """The language travels with the job's request, so a restarted bot delivers the track in the
    language of whoever asked for it."""
    async with between_starts(tmp_path) as env:
        stub, db, store = env.stub, env.db, env.store
        stub.languages[1] = "ru-RU"
        async with running_bot(stub, db, store, compose=False) as app:  # accepts, never composes
            await app.updater.start_polling(timeout=1)
            env.send("/compose jazz len=5")
            [progress] = await stub.wait_for("sendMessage")
            await eventually(lambda: _reply_to(db, 1))
        assert progress.params["text"] == "⏳ В очереди…"
        assert (await db.run(lambda s: s.get(Job, 1))).request["locale"] == "ru"

        async with running_bot(stub, db, store) as app:  # a fresh process on the same database
            await app.updater.start_polling(timeout=1)
            [audio] = await stub.wait_for("sendAudio", timeout=60)
        assert audio.params["caption"].startswith("Джаз #") and audio.labels[0] == "🔁 Переиграть"
        edits = [e.params["text"] for e in stub.calls_to("editMessageText")]
        assert all(e.startswith(("⏳ В очереди", "🎼 Сочиняю", "🎹 Записываю")) for e in edits), edits


# --- presses no button of ours sent -------------------------------------------------------------

# The bot as built for a run, read only for its handlers: every button's handler is covered here,
# a new one included, with presses made from its own pattern.
BUILT = build_application(TOKEN, None, None, None)  # type: ignore[arg-type]
PRESS_HANDLERS = [h for h in BUILT.handlers[0] if isinstance(h, CallbackQueryHandler)]
PRESSER = 7  # not 1: a forged /forgetme answer naming track #1's id must name someone else
MALFORMED = [None, "", "nonsense", "x" * 64, "🎵", "more:", "inst:abc", "keep:-1", "page:history:", "set::"]
PASSIVE = {"answerCallbackQuery", "getChatMember"}  # what a press may call and still post nothing


def first_taker(data: str | None) -> CallbackQueryHandler:
    """The handler the application gives a press carrying `data` (the first in its group that takes it)."""
    update = Update.de_json({"update_id": 1, "callback_query": BotApiStub().callback(data, PRESSER)}, BUILT.bot)
    return next(h for h in PRESS_HANDLERS if h.check_update(update))


def presses_for(handler: CallbackQueryHandler) -> list[str | None]:
    """What reaches `handler` that no button of ours sent: made from its pattern (ids no track has,
    values nobody chose); for the last handler, which takes every other press, malformed data and
    the buttons under a track that does not exist."""
    if handler.pattern is not None:
        return list(examples(handler.pattern))
    under_a_track = [b.data for row in track_buttons(int(MISSING_ID), False) for b in row]
    return [*MALFORMED, *(data for data in under_a_track if first_taker(data) is handler)]


async def press_alone(env: Env, data: str | None) -> Call:
    """Press with `data` and return the press's answer, once it was handled to its end; asserts
    that it was answered once, in an alert, and that the bot called nothing that posts or edits."""
    before = len(env.stub.calls)
    press = env.press(data, PRESSER)["callback_query"]
    env.send("/genres", PRESSER)  # the same sender's next update: handled only once the press is

    async def genres_listed() -> int | None:
        calls = env.stub.calls[before:]
        return next((before + i for i, c in enumerate(calls) if c.params.get("text", "").startswith("Genres:")), None)

    calls = env.stub.calls[before : await eventually(genres_listed)]
    answers = [c for c in calls if c.method == "answerCallbackQuery"]
    assert [a.params["callback_query_id"] for a in answers] == [press["id"]], (data, calls)
    assert {c.method for c in calls} <= PASSIVE, (data, [c.method for c in calls])
    assert answers[0].json("show_alert") is True, data
    return answers[0]


@pytest.mark.parametrize("handler", PRESS_HANDLERS, ids=lambda h: h.callback.__name__)
async def test_a_press_no_button_of_ours_sent_is_answered_privately_and_posts_nothing(tmp_path, caplog, handler):
    """Empty, missing, malformed, another's or naming a track that does not exist: every handler
    answers the presser alone and posts nothing in the chat; one that is not the presser's track
    reads as one that does not exist (no probing which ids exist)."""
    async with bot_env(tmp_path, compose=False) as env:
        foreign = await stored_track(env, owner="2")
        assert str(foreign) != str(PRESSER)
        presses = presses_for(handler)
        assert presses, "every handler gets presses to answer"
        for data in presses:
            if data is not None and data not in MALFORMED:
                assert first_taker(data) is handler, f"{data!r} does not reach {handler.callback.__name__}"
            answer = (await press_alone(env, data)).params.get("text", "")
            if data in MALFORMED:
                assert answer == OUT_OF_DATE, data
            elif MISSING_ID in data:
                others = (await press_alone(env, data.replace(MISSING_ID, str(foreign)))).params.get("text", "")
                assert others.replace(f"#{foreign}", f"#{MISSING_ID}") == answer, (data, answer, others)
    assert not [r for r in caplog.records if r.name == "bot.telegram.app" and "failed" in r.getMessage()]


async def test_a_database_out_of_reach_past_the_retries_is_told_as_such(own_postgres, tmp_path):
    """PostgreSQL down for longer than the bound: the user hears that the database is out of
    reach and nothing was saved, not a bare "something went wrong"; back up, the bot serves again."""
    stub = BotApiStub().start()
    db = Database(own_postgres.url, retry_for_s=0.5)
    await db.create_all()
    env = Env(stub, db, LocalArtifactStore(tmp_path / "artifacts"), itertools.count(100))
    try:
        async with running_bot(stub, db, env.store, compose=False) as app:
            await app.updater.start_polling(timeout=1)
            await asyncio.to_thread(own_postgres.stop)
            env.send("/history")
            [told] = await stub.wait_for("sendMessage")
            assert told.params["text"].startswith("⚠️ My database is out of reach right now")
            await asyncio.to_thread(own_postgres.start)
            env.send("/history")
            [_, listed] = await stub.wait_for("sendMessage", count=2)
            assert "No tracks yet" in listed.params["text"]
    finally:
        await db.dispose()
        stub.stop()

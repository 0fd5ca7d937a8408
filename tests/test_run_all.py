"""`melomania run all`: token errors as one line, and a real start of both bots in one process,
wired to the loopback Telegram and Discord stubs, composing for each through one runner, then a
clean stop on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import one_line_error, tiny_model
from discord_stub import DiscordApiStub
from telegram_stub import BotApiStub
from typer.testing import CliRunner

from generator import LoadedModel, save_checkpoint
from melomania.cli import app
from melomania.composer import Composer
from melomania.run_all import build_bots
from melomania.settings import Settings

TELEGRAM_TOKEN = "123456:TEST-run-all-telegram"
DISCORD_TOKEN = "MTIzNDU2.run-all.TEST-discord-token"

# Points the two libraries at the loopback stubs (their endpoints are constants, not settings),
# then runs the real command line exactly as the console script does.
LAUNCHER = """
import sys
import yarl, discord.gateway, discord.http
from telegram.ext import ApplicationBuilder

discord_api, discord_gateway, telegram_api, telegram_files = sys.argv[1:5]
discord.http.Route.BASE = discord_api
discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(discord_gateway)
built = ApplicationBuilder.__init__

def to_the_stub(self):
    built(self)
    self.base_url(telegram_api).base_file_url(telegram_files)

ApplicationBuilder.__init__ = to_the_stub
import atexit, os
if report := os.environ.get("TORCH_REPORT"):  # a file to say, at exit, whether torch was imported
    atexit.register(lambda: open(report, "w").write(str("torch" in sys.modules)))
sys.argv = ["melomania", "run", "all"]
from melomania.cli import main
main()
"""


@pytest.mark.parametrize(
    "telegram, discord, fragments",
    [
        (None, DISCORD_TOKEN, ("no Telegram bot token: set MELOMANIA_TELEGRAM_TOKEN", "@BotFather")),
        (TELEGRAM_TOKEN, None, ("no Discord bot token: set MELOMANIA_DISCORD_TOKEN", "developer portal")),
        (None, None, ("no Telegram bot token", "in the environment or in .env")),
        ("not-a-token", DISCORD_TOKEN, ("MELOMANIA_TELEGRAM_TOKEN is not a bot token", "123456:ABC")),
        (TELEGRAM_TOKEN, "not a token", ("MELOMANIA_DISCORD_TOKEN is not a bot token", "three dot-separated parts")),
    ],
)
def test_run_all_without_both_valid_tokens_is_a_one_line_error(monkeypatch, tmp_path, telegram, discord, fragments):
    monkeypatch.chdir(tmp_path)
    for var, value in (("MELOMANIA_TELEGRAM_TOKEN", telegram), ("MELOMANIA_DISCORD_TOKEN", discord)):
        if value is None:
            monkeypatch.delenv(var, raising=False)
        else:
            monkeypatch.setenv(var, value)
    line = one_line_error(CliRunner().invoke(app, ["run", "all"]), *fragments)
    for value in (telegram, discord):
        assert value is None or value not in line


def test_run_all_refuses_a_telegram_webhook_setting(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MELOMANIA_TELEGRAM_TOKEN", TELEGRAM_TOKEN)
    monkeypatch.setenv("MELOMANIA_DISCORD_TOKEN", DISCORD_TOKEN)
    monkeypatch.setenv("MELOMANIA_TELEGRAM_WEBHOOK_URL", "https://bots.example.org/telegram")
    one_line_error(CliRunner().invoke(app, ["run", "all"]), "unset MELOMANIA_TELEGRAM_WEBHOOK_URL")


async def test_both_bots_are_built_on_one_runner_with_the_one_loaded_model(tmp_path):
    loaded = LoadedModel(tiny_model(max_len=64), name="tiny", sha256="0" * 64)
    settings = Settings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'one.db'}", data_dir=tmp_path, rate_per_user=2)
    bots = build_bots(settings, Composer(loaded=loaded), TELEGRAM_TOKEN)
    await bots.db.create_all()
    await bots.runner.start()
    try:
        assert bots.telegram.bot_data["core"].backend is bots.runner is bots.discord.core.backend
        assert bots.runner.loaded is loaded
        assert bots.discord.limits.per_user.limit == bots.telegram.bot_data["core"].limits.per_user.limit == 2
        assert bots.discord.limits is not bots.telegram.bot_data["core"].limits  # each platform counts its own
    finally:
        await bots.runner.stop()
        await bots.db.dispose()


@pytest.fixture
def stubs():
    telegram, discord = BotApiStub().start(), DiscordApiStub().start()
    try:
        yield telegram, discord
    finally:
        telegram.stop()
        discord.stop()


def bot_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    checkpoint = tmp_path / "tiny.pt"
    if not checkpoint.exists():
        save_checkpoint(tiny_model(max_len=256), checkpoint)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELOMANIA_")}
    return env | {
        "MELOMANIA_CHECKPOINT": str(checkpoint),
        "MELOMANIA_DATABASE_URL": f"sqlite+aiosqlite:///{tmp_path / 'bots.db'}",
        "MELOMANIA_DATA_DIR": str(tmp_path / "data"),
        "MELOMANIA_TELEGRAM_TOKEN": TELEGRAM_TOKEN,
        "MELOMANIA_DISCORD_TOKEN": DISCORD_TOKEN,
        **extra,
    }


def start_run_all(
    tmp_path: Path, telegram: BotApiStub, discord: DiscordApiStub, dotenv: bool = False, **extra: str
) -> subprocess.Popen:
    """`melomania run all` in `tmp_path`; with `dotenv`, the tokens are in its .env, not the environment."""
    env = bot_env(tmp_path, **extra)
    if dotenv:
        tokens = [f"{var}={env.pop(var)}\n" for var in ("MELOMANIA_TELEGRAM_TOKEN", "MELOMANIA_DISCORD_TOKEN")]
        (tmp_path / ".env").write_text("".join(tokens))
    urls = [discord.base_url, discord.gateway_url, telegram.base_url, telegram.file_url]
    return subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, *urls],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def stopped(process: subprocess.Popen, sig: int | None = signal.SIGTERM, timeout: float = 60) -> tuple[int, str]:
    if sig is not None:
        process.send_signal(sig)
    out, err = await asyncio.to_thread(process.communicate, timeout=timeout)
    return process.returncode, out + err


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
async def test_run_all_composes_for_both_platforms_through_one_runner_and_stops_cleanly(tmp_path, stubs, stop_signal):
    telegram, discord = stubs
    process = start_run_all(tmp_path, telegram, discord)
    try:
        telegram.queue_update({"update_id": 1, "message": telegram.message("/compose ambient 5s", user_id=41)})
        [identify] = await discord.wait_for("identify", timeout=180)
        discord.deliver(discord.command("compose", genre="jazz", seconds=5, user_id=42))
        [audio] = await telegram.wait_for("sendAudio", timeout=120)
        [post] = await discord.wait_for("edit_original", files=True, timeout=120)  # progress edited into the track
    except BaseException:
        process.kill()
        print(process.communicate()[1][-5000:])
        raise
    code, output = await stopped(process, stop_signal)

    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert identify.payload["token"] == DISCORD_TOKEN and identify.payload["intents"] == 1  # guilds only
    assert audio.chat_id == "41" and audio.files.get("audio", b"")[:3] in (b"ID3", b"\xff\xfb")
    assert any(name.endswith(".mp3") for name in post.files)
    assert output.count("compose through one in-process runner") == 1
    assert TELEGRAM_TOKEN not in output and DISCORD_TOKEN not in output
    assert f"{stop_signal.name}: stopping both bots" in output
    assert output.rstrip().endswith("melomania.run_all: stopped")
    [closed] = discord.calls_to("gateway_closed")
    assert closed.payload["code"] == 1000  # the client said goodbye; it did not just drop

    with sqlite3.connect(tmp_path / "bots.db") as db:
        jobs = db.execute("SELECT request, state FROM jobs ORDER BY id").fetchall()
        models = db.execute("SELECT DISTINCT model_id, checkpoint_sha256 FROM tracks").fetchall()
    requests = [(json.loads(r)["platform"], json.loads(r)["genre"], state) for r, state in jobs]
    assert sorted(requests) == [("discord", "jazz", "done"), ("telegram", "calm", "done")]
    assert len(models) == 1  # both composed by the same loaded model


async def test_run_all_reads_the_tokens_from_dotenv_and_never_prints_them(tmp_path, stubs):
    telegram, discord = stubs
    process = start_run_all(tmp_path, telegram, discord, dotenv=True)
    try:
        [identify] = await discord.wait_for("identify", timeout=180)
        [polling] = await telegram.wait_for("deleteWebhook", timeout=60)  # past getMe: polling
    except BaseException:
        process.kill()
        print(process.communicate()[1][-5000:])
        raise
    code, output = await stopped(process)
    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert identify.payload["token"] == DISCORD_TOKEN and polling.token == TELEGRAM_TOKEN
    assert {call.token for call in telegram.calls} == {TELEGRAM_TOKEN}
    assert TELEGRAM_TOKEN not in output and DISCORD_TOKEN not in output


async def test_run_all_with_a_rejected_discord_token_stops_the_telegram_bot_and_says_which(tmp_path, stubs):
    telegram, discord = stubs
    discord.reject_token = True
    code, output = await stopped(start_run_all(tmp_path, telegram, discord), sig=None, timeout=180)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and lines[-1] == (
        "error: Discord rejected MELOMANIA_DISCORD_TOKEN; check it in the developer portal"
    ), output[-3000:]
    assert "Traceback" not in output and DISCORD_TOKEN not in output and TELEGRAM_TOKEN not in output
    assert telegram.calls_to("getMe") and not discord.calls_to("identify")
    with sqlite3.connect(tmp_path / "bots.db") as db:
        assert db.execute("SELECT count(*) FROM jobs").fetchone() == (0,)


async def test_run_all_stops_everything_when_discord_closes_the_gateway_for_good(tmp_path, stubs):
    telegram, discord = stubs
    discord.close_on_identify = 4004  # Authentication failed: reconnecting cannot help
    code, output = await stopped(start_run_all(tmp_path, telegram, discord), sig=None, timeout=180)
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and lines[-1].startswith("error: Discord closed the gateway connection (code 4004)"), output
    assert "Traceback" not in output and "melomania.run_all: stopped" in output  # the Telegram bot and runner too
    assert telegram.calls_to("deleteWebhook")  # Telegram had been polling


async def test_with_redis_the_bots_load_no_model_and_workers_compose_for_both(tmp_path, stubs):
    """MELOMANIA_REDIS_URL: the bot process enqueues, a separate `melomania worker` composes and
    renders, the bots deliver; the bot process never imports torch."""
    from servers import redis_server

    telegram, discord = stubs
    with redis_server() as redis_url:
        env = bot_env(tmp_path, MELOMANIA_REDIS_URL=redis_url, MELOMANIA_THREADS="1")
        subprocess.run([sys.executable, "-m", "melomania.cli", "db", "upgrade"], env=env, cwd=tmp_path, check=True)
        with open(tmp_path / "worker.log", "w") as log:
            worker = subprocess.Popen(
                [sys.executable, "-m", "melomania.cli", "worker"], env=env, cwd=tmp_path, stdout=log, stderr=log
            )
        report = tmp_path / "torch-imported"
        process = start_run_all(tmp_path, telegram, discord, MELOMANIA_REDIS_URL=redis_url, TORCH_REPORT=str(report))
        try:
            telegram.queue_update({"update_id": 1, "message": telegram.message("/compose ambient 5s", user_id=41)})
            await discord.wait_for("identify", timeout=180)
            discord.deliver(discord.command("compose", genre="jazz", seconds=5, user_id=42))
            [audio] = await telegram.wait_for("sendAudio", timeout=120)
            [post] = await discord.wait_for("edit_original", files=True, timeout=120)  # progress edited into the track
        except BaseException:
            process.kill()
            print(process.communicate()[1][-5000:], (tmp_path / "worker.log").read_text()[-3000:])
            raise
        finally:
            worker.send_signal(signal.SIGTERM)
            worker.wait(30)
        code, output = await stopped(process)

    assert code == 0 and "Traceback" not in output, output[-3000:]
    assert audio.chat_id == "41" and audio.files.get("audio", b"")[:3] in (b"ID3", b"\xff\xfb")
    assert any(name.endswith(".mp3") for name in post.files)
    assert "compose through melomania worker processes over Redis" in output
    assert report.read_text() == "False"  # the bot process never imported torch
    assert redis_url not in output and TELEGRAM_TOKEN not in output
    with sqlite3.connect(tmp_path / "bots.db") as db:
        states = db.execute("SELECT state FROM jobs").fetchall()
    assert sorted(states) == [("done",), ("done",)]


def test_an_unreachable_redis_is_a_one_line_error(monkeypatch, tmp_path):
    from servers import free_port

    for key, value in bot_env(tmp_path).items():
        if key.startswith("MELOMANIA_"):
            monkeypatch.setenv(key, value)
    monkeypatch.setenv("MELOMANIA_REDIS_URL", f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    line = one_line_error(CliRunner().invoke(app, ["run", "all"]), "cannot reach Redis at MELOMANIA_REDIS_URL")
    assert "hunter2" not in line

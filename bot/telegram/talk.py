"""Telegram's words for the service's types: who asks (in which language) and where, a `Reply` as
a message, buttons as an inline keyboard, and Bot API calls retried on network errors (flood waits
are the rate limiter's: `AIORateLimiter`, set up in `bot.telegram.app`)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup, SwitchInlineQueryChosenChat, Update
from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import Application

from bot.core import CommandService, Origin, Where, Who
from bot.i18n import Translations, language_of, translator
from bot.replies import LIMITED, REFUSED, UNREADABLE, USAGE, Button, Reply

log = logging.getLogger(__name__)
T = TypeVar("T")

PLATFORM = "telegram"
RETRIES = 4
MARKS = {USAGE: "🤔 ", REFUSED: "🙅 ", LIMITED: "🙅 ", UNREADABLE: "🤔 "}


def core_of(app: Application) -> CommandService:
    return app.bot_data["core"]


def who(update: Update) -> Who:
    """The sender (handlers only see new messages, button presses and inline queries, which all
    have one), answered in the language of their Telegram app."""
    user = update.effective_user
    return Who(PLATFORM, str(user.id), user.full_name, language_of(user.language_code))


def tr(update: object) -> Translations:
    """The sender's language; English for an update that names none."""
    user = update.effective_user if isinstance(update, Update) else None
    return translator(user.language_code if user is not None else None)


def here(update: Update) -> Where:
    """The chat; a group's members share its rate budget, and a job's result goes back to it."""
    chat = update.effective_chat
    return Where(PLATFORM, str(chat.id), f"{PLATFORM}-chat:{chat.id}", {"chat_id": chat.id})


def origin(update: Update) -> Origin:
    return Origin(who(update), here(update), f"{PLATFORM}:{update.update_id}")


def text_of(reply: Reply) -> str:
    return MARKS.get(reply.kind, "") + reply.text


def keyboard(rows: list[list[Button]]) -> InlineKeyboardMarkup:
    return InlineKeyboardMarkup([[telegram_button(b) for b in row] for row in rows])


def telegram_button(button: Button) -> InlineKeyboardButton:
    """A callback button; 📤 Share instead opens Telegram's chat picker, which posts the track
    through inline mode ("#42" finds the sharer's own track) in whatever chat they choose."""
    action, _, track_id = button.data.partition(":")
    if action == "share" and track_id.isdigit():
        picker = SwitchInlineQueryChosenChat(
            query=f"#{track_id}",
            allow_user_chats=True,
            allow_bot_chats=False,
            allow_group_chats=True,
            allow_channel_chats=True,
        )
        return InlineKeyboardButton(button.label, switch_inline_query_chosen_chat=picker)
    return InlineKeyboardButton(button.label, callback_data=button.data)


async def with_retries(call: Callable[[], Awaitable[T]]) -> T:
    """A Bot API call, retried on network errors (a 502, a dropped connection) with backoff. A
    flood wait (429 retry_after) was already waited out and retried by the rate limiter: one
    that still comes through is raised, like a refusal (400, 403)."""
    delay = 1.0
    for _ in range(RETRIES):
        try:
            return await call()
        except (BadRequest, RetryAfter):
            raise
        except NetworkError as exc:
            log.warning("Telegram network error, retrying in %g s: %s", delay, exc.__class__.__name__)
            await asyncio.sleep(delay)
            delay *= 2
    return await call()


async def say(update: Update, text: str) -> None:
    await with_retries(lambda: update.effective_message.reply_text(text))


async def answer(update: Update, reply: Reply) -> None:
    """The service's reply in the chat; nothing for a silent one (the update came again)."""
    if not reply.silent:
        await say(update, text_of(reply))

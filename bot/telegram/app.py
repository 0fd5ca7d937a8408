"""The Telegram front end (python-telegram-bot v22), wired: every handler registered, the
command service (`bot.core`) in `bot_data["core"]`. Handlers only translate updates into intents
and replies into messages.

    app = build_application(token, runner, db, store)
    app.run_polling()   # or, with a public https URL: app.run_webhook(**webhook.run_options())
"""

from __future__ import annotations

import contextlib
import logging

from telegram import BotCommand, Update
from telegram.error import TelegramError
from telegram.ext import (
    AIORateLimiter,
    Application,
    ApplicationHandlerStop,
    CallbackQueryHandler,
    CommandHandler,
    ContextTypes,
    InlineQueryHandler,
    MessageHandler,
    TypeHandler,
    filters,
)

from bot.core import ArtifactStore, CommandService, Database, JobBackend, apology
from bot.i18n import LANGUAGES, N_, SOURCE, translator
from bot.limits import Limits
from bot.replies import ARRANGE, KEEP
from bot.telegram import commands as c
from bot.telegram.buttons import (
    FORGET_DATA,
    GENRE_DATA,
    INSTRUMENT_DATA,
    MORE_DATA,
    arrangement,
    button,
    forget_answer,
    forget_me,
    instrument,
    keep,
    more,
    pick_genre,
)
from bot.telegram.delivery import resume_deliveries, stop_following
from bot.telegram.inline import inline_query
from bot.telegram.menus import PAGE_DATA, SETTINGS_DATA, settings_button, turn_page
from bot.telegram.ordering import PerSenderOrder
from bot.telegram.talk import PLATFORM, say, tr

log = logging.getLogger(__name__)

FLOOD_RETRIES = 3  # a call Telegram answers "retry after N s" is retried this often, N s apart
NEW_MESSAGES = filters.UpdateType.MESSAGE  # not edits (editing a /compose must not compose again), not channel posts
COMMANDS = {  # descriptions, in each language Telegram shows its users (`register_commands`)
    "compose": N_("compose a track: /compose jazz 0.9 60s (count=3: three to pick from)"),
    "genres": N_("the genres you can ask for"),
    "history": N_("your tracks, newest first: /history 2"),
    "favorites": N_("your favourite tracks"),
    "continue": N_("continue a track: /continue 42, or reply /continue to a MIDI file"),
    "share": N_("post a track into a channel: /share 42 @channel"),
    "settings": N_("your defaults: /settings genre=jazz temp=0.9"),
    "cancel": N_("stop the track being composed"),
    "forgetme": N_("delete everything I keep about you"),
    "help": N_("how to talk to me"),
}

# Who Telegram names as the sender when it hides the person: an anonymous group admin
# (@GroupAnonymousBot), someone posting as a channel (@Channel_Bot) and a channel's posts forwarded
# into its discussion group (Telegram's own 777000). Many people share each id.
STAND_IN_IDS = frozenset({1087968824, 136817688, 777000})
ANONYMOUS = N_(
    "🙈 I can't tell who you are when you post as the group or as a channel, and your tracks, favourites "
    "and settings must be yours alone. Turn off “Remain anonymous” (or post as yourself) to use me."
)


async def refuse_hidden_senders(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """Runs before every other handler. A message whose sender Telegram hides comes from an id
    that many people share: answered with why, and handled no further (else they would all share
    one account, each able to continue, cancel or delete the others' tracks)."""
    message = update.message
    if message is None:  # button presses and inline queries always name the real person
        return
    sender = message.from_user
    if message.sender_chat is None and (sender is None or sender.id not in STAND_IN_IDS):
        return
    words = (message.text or message.caption or "").split(maxsplit=1)
    command, _, addressee = (words[0] if words else "").partition("@")
    if command.startswith("/") and addressee.lower() in ("", context.bot.username.lower()):  # ours to answer
        await say(update, tr(update).gettext(ANONYMOUS))
    raise ApplicationHandlerStop


async def on_error(update: object, context: ContextTypes.DEFAULT_TYPE) -> None:
    """One place for every unexpected error: log it (never the token) and tell the user, if any:
    a press only the presser (in an alert: the chat may be everyone's), a message in reply."""
    token = context.bot.token
    detail = str(context.error).replace(token, "<token>")
    update_id = update.update_id if isinstance(update, Update) else None
    log.error("update %s failed: %s: %s", update_id, context.error.__class__.__name__, detail)
    if not isinstance(update, Update):
        return
    text = tr(update).gettext(apology(context.error))
    with contextlib.suppress(TelegramError):  # answered already, or too old to answer
        if update.callback_query is not None:
            await update.callback_query.answer(text, show_alert=True)
        elif update.effective_message is not None:
            await update.effective_message.reply_text(text)


class Pressed(CallbackQueryHandler):
    """The handler of one kind of button, chosen by its callback data's pattern. PTB matches a
    press without data (or with empty data) to every pattern; here it goes on, to the last
    handler, which answers that the button is out of date."""

    def check_update(self, update: object) -> bool | object | None:
        if isinstance(update, Update) and update.callback_query is not None and not update.callback_query.data:
            return False
        return super().check_update(update)


async def register_commands(application: Application) -> None:
    """The command list in English for everyone, then in each translated language for the users
    whose Telegram app speaks it."""
    for language in LANGUAGES:
        t = translator(language)
        commands = [BotCommand(name, t.gettext(text)) for name, text in COMMANDS.items()]
        await application.bot.set_my_commands(commands, language_code=None if language == SOURCE else language)


async def on_start(application: Application) -> None:
    """After connecting: announce the commands, then deliver the jobs a restart left unfinished."""
    await register_commands(application)
    await resume_deliveries(application)


def build_application(
    token: str,
    backend: JobBackend,
    db: Database,
    store: ArtifactStore,
    base_url: str | None = None,
    base_file_url: str | None = None,
    limits: Limits | None = None,
) -> Application:
    """The bot on a job backend, a database and an artifact store: every handler registered,
    updates handled concurrently (each sender's in order), calls kept within Telegram's rate
    limits and retried after its flood waits (AIORateLimiter); on start-up it announces its
    commands and resumes delivering unfinished jobs, and on stop it stops following them (the
    next start resumes)."""
    logging.getLogger("httpx").setLevel(logging.WARNING)  # its INFO lines carry URLs with the token
    builder = (
        Application.builder()
        .token(token)
        .post_init(on_start)
        .post_stop(stop_following)
        .concurrent_updates(PerSenderOrder())  # concurrent, each sender's in order
        .rate_limiter(AIORateLimiter(max_retries=FLOOD_RETRIES))  # Telegram's limits, and its flood waits
    )
    if base_url:
        builder = builder.base_url(base_url)
    if base_file_url:
        builder = builder.base_file_url(base_file_url)
    application = builder.build()
    application.bot_data["core"] = CommandService(PLATFORM, backend, db, store, limits)
    application.add_handler(TypeHandler(Update, refuse_hidden_senders), group=-1)
    for name, handler in (
        ("start", c.start),
        ("help", c.help_command),
        ("genres", c.genres),
        ("compose", c.compose),
        ("continue", c.continue_command),
        ("history", c.history_command),
        (("favorites", "favourites", "favs"), c.favorites_command),
        ("settings", c.settings),
        ("cancel", c.cancel),
        (("forgetme", "forget_me"), forget_me),
        ("share", c.share),
    ):
        application.add_handler(CommandHandler(name, handler, filters=NEW_MESSAGES))
    application.add_handler(Pressed(forget_answer, pattern=FORGET_DATA))
    application.add_handler(Pressed(more, pattern=MORE_DATA))
    application.add_handler(Pressed(instrument, pattern=INSTRUMENT_DATA))
    application.add_handler(Pressed(arrangement, pattern=ARRANGE))
    application.add_handler(Pressed(keep, pattern=KEEP))
    application.add_handler(Pressed(pick_genre, pattern=GENRE_DATA))
    application.add_handler(Pressed(turn_page, pattern=PAGE_DATA))
    application.add_handler(Pressed(settings_button, pattern=SETTINGS_DATA))
    application.add_handler(CallbackQueryHandler(button))  # the rest: 🔁 🔥 ❄️ ⭐ ➕ 📤, or out of date
    application.add_handler(InlineQueryHandler(inline_query))
    application.add_handler(MessageHandler(NEW_MESSAGES & filters.TEXT & filters.ChatType.PRIVATE, c.unknown))
    application.add_error_handler(on_error)
    return application

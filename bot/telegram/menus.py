"""Telegram's button menus: ◀ ▶ under a page of history or favourites, and /settings as buttons
(genre, temperature, length, instrument), each press stored as the default and the menu redrawn.
Typed /history 2 and /settings genre=jazz keep working (`bot.telegram.commands`)."""

from __future__ import annotations

import contextlib
import re

from telegram import Update
from telegram.error import BadRequest
from telegram.ext import ContextTypes

from bot.core import PageAsk, SettingsAsk
from bot.grammar import SettingsCommand, UsageError, parse
from bot.i18n import N_, Translations
from bot.replies import OUT_OF_DATE, Button, Listing, Reply, genre_label, listing_text
from bot.telegram.talk import core_of, keyboard, origin, tr
from generator.instruments import INSTRUMENTS
from generator.vocab import GENRES

PAGE_SIZE = 10
EMPTY = {
    "history": N_("No tracks yet: try /compose ambient"),
    "favorites": N_("No favourites yet: press ⭐ under a track"),
}
FOOTER = N_("Send /continue <number> or /share <number> @channel.")
PAGE_DATA = re.compile(r"^page:(history|favorites):(\d{1,4})$")
SETTINGS_DATA = re.compile(r"^(?:settings:(\w{1,10})|set:(\w{1,10}):([\w.]{1,40}))$")  # a section, or a value
SETTINGS_HINT = N_("Pick below, or type /settings genre=jazz temp=0.9 len=60")

# What the menu offers; the typed command takes any value in range.
TEMPERATURES = (0.6, 0.8, 1.0, 1.2, 1.5)
LENGTHS = (15, 30, 60, 90, 120, 180)
SECTIONS = {"genre": N_("🎼 Genre"), "temp": N_("🌡 Temperature"), "len": N_("⏱ Length"), "inst": N_("🎹 Instrument")}


# --- pages -----------------------------------------------------------------------------------


def page_buttons(listing: Listing) -> list[list[Button]]:
    """◀ to the page before (past page 1), ▶ to the next (when there is one)."""
    row = []
    if listing.page_no > 1 and listing.lines:
        row.append(Button(f"◀ {listing.page_no - 1}", f"page:{listing.kind}:{listing.page_no - 1}"))
    if listing.more:
        row.append(Button(f"{listing.page_no + 1} ▶", f"page:{listing.kind}:{listing.page_no + 1}"))
    return [row] if row else []


async def page_of(update: Update, context: ContextTypes.DEFAULT_TYPE, kind: str, page_no: int) -> Listing:
    return await core_of(context.application).page(PageAsk(origin(update), kind, page_no, PAGE_SIZE))


def page_text(listing: Listing, t: Translations) -> str:
    return listing_text(listing, EMPTY, footer=FOOTER, t=t)


async def turn_page(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """◀ ▶: the list message becomes the presser's page before or after."""
    query = update.callback_query
    m = PAGE_DATA.match(query.data or "")
    if m is None:
        await query.answer(tr(update).gettext(OUT_OF_DATE), show_alert=True)
        return
    listing = await page_of(update, context, m.group(1), max(1, int(m.group(2))))
    if listing.page_no > 1 and not listing.lines:  # past the last page: the list has shrunk since
        await query.answer(tr(update).gettext(OUT_OF_DATE), show_alert=True)
        return
    await query.answer()
    with contextlib.suppress(BadRequest):  # "not modified" (pressed twice), or the message is gone
        await query.edit_message_text(page_text(listing, tr(update)), reply_markup=keyboard(page_buttons(listing)))


# --- settings --------------------------------------------------------------------------------


def settings_menu(section: str | None, t: Translations) -> list[list[Button]]:
    """The top menu (one button a setting), or one setting's choices with ◀ Back."""
    if section is None:
        pairs = list(SECTIONS.items())
        return [[Button(t.gettext(label), f"settings:{key}") for key, label in pairs[i : i + 2]] for i in (0, 2)]
    if section == "genre":
        choices = [(genre_label(g, t), g) for g in GENRES]
    elif section == "temp":
        choices = [(f"{x:g}", f"{x:g}") for x in TEMPERATURES]
    elif section == "len":
        choices = [(t.gettext("{seconds} s").format(seconds=s), str(s)) for s in LENGTHS]
    else:
        choices = [(name, name.replace(" ", "_")) for name in INSTRUMENTS]
    per_row = 3 if section in ("temp", "len", "inst") else 2
    buttons = [Button(label, f"set:{section}:{value}") for label, value in choices]
    rows = [buttons[i : i + per_row] for i in range(0, len(buttons), per_row)]
    return [*rows, [Button(t.gettext("◀ Back"), "settings:menu")]]


def settings_message(reply: Reply, t: Translations) -> str:
    return f"{reply.text}\n{t.gettext(SETTINGS_HINT)}"


async def settings_button(update: Update, context: ContextTypes.DEFAULT_TYPE) -> None:
    """settings:<section> opens a setting's choices (settings:menu goes back); set:<key>:<value>
    stores that default (checked by the same grammar as the typed command) and redraws the menu."""
    query, t = update.callback_query, tr(update)
    pressed = SETTINGS_DATA.match(query.data or "")
    section, key, value = pressed.groups() if pressed is not None else (None, None, None)
    if pressed is None or (section is not None and section not in ("menu", *SECTIONS)):
        await query.answer(t.gettext(OUT_OF_DATE), show_alert=True)
        return
    if section is not None:
        await query.answer()
        with contextlib.suppress(BadRequest):
            await query.edit_message_reply_markup(keyboard(settings_menu(None if section == "menu" else section, t)))
        return
    try:
        cmd = parse(f"/settings {key}={value}")
        assert isinstance(cmd, SettingsCommand)
    except UsageError as exc:
        await query.answer(f"🤔 {exc.said(t)}", show_alert=True)
        return
    reply = await core_of(context.application).settings(SettingsAsk(origin(update), cmd.values))
    await query.answer(t.gettext("✅ Saved"))
    with contextlib.suppress(BadRequest):
        await query.edit_message_text(settings_message(reply, t), reply_markup=keyboard(settings_menu(None, t)))

"""Slash commands in the user's language: discord.py's `app_commands.Translator` gives Discord each
command's and option's description in every language we have a catalogue for (Discord shows each
user their client's language). Command, option and choice names are not translated: they are the
words people type, the same everywhere."""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.app_commands import TranslationContextLocation as Location
from discord.app_commands import locale_str

from bot.i18n import SOURCE, Phrase, language_of, translator

DESCRIPTIONS = (Location.command_description, Location.group_description, Location.parameter_description)


def described(message: str, **values: Any) -> locale_str:
    """A description with values in it (a range, a size): English as Discord's default, the
    phrase for the translator."""
    phrase = Phrase(message, values)
    return locale_str(str(phrase), phrase=phrase)


class CommandTranslator(app_commands.Translator):
    """The descriptions of the command tree from the catalogues; None (Discord's default, English)
    for a language without one, or a string it has no translation of."""

    async def translate(
        self, string: locale_str, locale: discord.Locale, context: app_commands.TranslationContextTypes
    ) -> str | None:
        if context.location not in DESCRIPTIONS or language_of(locale.value) == SOURCE:
            return None
        phrase = string.extras.get("phrase") or Phrase(string.message)
        said = phrase.said(translator(locale.value))
        return said if said != str(phrase) else None

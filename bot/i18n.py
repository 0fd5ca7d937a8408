"""The bot's words in the asker's language. English is the source language (a msgid is the English
text itself); Russian lives in bot/locales/ru/LC_MESSAGES/melomania.po. Any other language, or
none, is answered in English. Adapters put the asker's language in `Who.locale` (Telegram's
`language_code`, Discord's `interaction.locale`); whatever builds text takes `translator(locale)`.

To add a string users see:
1. Mark it where it is built, with the asker's translator `t`; values go in by name, never in an
   f-string, so that the translation can move them:
       t.gettext("Genres: {genres}.").format(genres=names)
       t.ngettext("{n} track", "{n} tracks", n).format(n=n)          # anything counted
       LABEL = N_("⋯ More")  …  t.gettext(LABEL)                       # a module-level constant
       raise UsageError(N_("{word!r} is not a track number"), word=w)  # said later, in the reader's language
2. `make locales`: pybabel extracts every marked string (babel.cfg) into bot/locales/melomania.pot
   and merges it into each language's .po.
3. Translate the new entries of bot/locales/ru/LC_MESSAGES/melomania.po, keeping every {placeholder},
   and delete their `#, fuzzy` lines.
4. Nothing to compile (`translator` reads the .po). tests/test_i18n.py fails while a marked string
   is missing from a .po, untranslated or fuzzy, or a translation drops or renames a placeholder.
A new language: add it to LANGUAGES, `pybabel init -D melomania -i bot/locales/melomania.pot
-d bot/locales -l <code>` (after `make locales`), and translate its .po.
"""

from __future__ import annotations

import functools
import gettext
import io
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from babel import negotiate_locale
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po

DOMAIN = "melomania"
LOCALES = Path(__file__).with_name("locales")
SOURCE = "en"
LANGUAGES = (SOURCE, "ru")

Translations = gettext.NullTranslations
ENGLISH = gettext.NullTranslations()  # the source language: every msgid is its own translation


def N_(message: str) -> str:
    """Marks a string for extraction where no translator is at hand (a module-level constant);
    it is translated where it is used, with `t.gettext`."""
    return message


def language_of(code: str | None) -> str:
    """The catalogue for a user's language code: 'ru', 'ru-RU' (Discord's Locale values),
    'ru_RU' → 'ru'; none, or a language without a catalogue → English."""
    if not code:
        return SOURCE
    found = negotiate_locale([str(code).replace("-", "_")], LANGUAGES)
    return found.lower() if found else SOURCE


def translator(code: str | None) -> Translations:
    """The translations for a user's language code (see `language_of`)."""
    return catalogue(language_of(code))


@functools.cache
def catalogue(language: str) -> Translations:
    """A language's catalogue, compiled from its .po with Babel in memory, once per process: the
    .po is the one file to edit and review, with no compiled .mo in git to drift from it and no
    build step to forget before a start. Fuzzy entries are left out (said in English)."""
    if language == SOURCE:
        return ENGLISH
    with (LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        catalog = read_po(po, locale=language, domain=DOMAIN)
    mo = io.BytesIO()
    write_mo(mo, catalog)
    mo.seek(0)
    return gettext.GNUTranslations(mo)


@dataclass(frozen=True)
class Phrase:
    """Words to be said later, in the reader's language: a msgid and the values of its
    placeholders (a value that is a Phrase itself is said in the same language)."""

    msgid: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def said(self, t: Translations) -> str:
        text = t.gettext(self.msgid)
        if not self.values:  # nothing to fill in: braces in the text are the text's own
            return text
        return text.format(**{k: v.said(t) if isinstance(v, Phrase) else v for k, v in self.values.items()})

    def __str__(self) -> str:
        return self.said(ENGLISH)


class PhraseError(Exception):
    """An error whose message is for the user: English as str(), their language with `said`."""

    def __init__(self, message: str, **values: Any) -> None:
        self.phrase = Phrase(message, values)
        super().__init__(str(self.phrase))

    def said(self, t: Translations) -> str:
        return self.phrase.said(t)


def reason(exc: BaseException, t: Translations) -> str:
    """An error's message in the reader's language where it has one (a `PhraseError`), else as
    raised (the job backend's and Telegram's own words)."""
    return exc.said(t) if isinstance(exc, PhraseError) else str(exc)

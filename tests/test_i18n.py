"""The catalogues: every text the bot marks is translated in each language, keeps its placeholders,
and counts take the language's plural forms; users' language codes find their catalogue."""

from __future__ import annotations

import string
from pathlib import Path

import discord
import pytest
from babel.messages.catalog import Catalog
from babel.messages.extract import extract_from_dir
from babel.messages.frontend import parse_mapping_cfg
from babel.messages.pofile import read_po

from bot.grammar import UsageError, parse
from bot.i18n import DOMAIN, ENGLISH, LANGUAGES, LOCALES, SOURCE, language_of, translator
from bot.replies import candidates_missing, candidates_progress, genre_label
from generator.vocab import GENRES

ROOT = Path(__file__).resolve().parents[1]
TRANSLATED = [language for language in LANGUAGES if language != SOURCE]


def marked() -> set[str | tuple[str, str]]:
    """Every string the code marks for translation, found as `make locales` finds them (babel.cfg)."""
    with (ROOT / "babel.cfg").open() as cfg:
        method_map, options_map = parse_mapping_cfg(cfg)
    return {message for _, _, message, _, _ in extract_from_dir(ROOT / "bot", method_map, options_map)}


def catalogue(language: str) -> Catalog:
    with (LOCALES / language / "LC_MESSAGES" / f"{DOMAIN}.po").open("rb") as po:
        return read_po(po, locale=language, domain=DOMAIN)


def placeholders(text: str) -> list[tuple[str, str | None, str]]:
    """The {fields} a text fills in (name, conversion, format), sorted; literal text left out."""
    return sorted(
        (name, conversion, spec or "")
        for _, name, spec, conversion in string.Formatter().parse(text)
        if name is not None
    )


def placeholder_problems(catalog: Catalog) -> list[str]:
    """Every translation whose placeholders are not its English text's: dropped, added or renamed
    (a plural form is held to the English plural, which names the count)."""
    problems = []
    for message in catalog:
        if not message.id:
            continue  # the header
        english = message.id if isinstance(message.id, tuple) else (message.id,)
        forms = message.string if isinstance(message.string, tuple) else (message.string,)
        for form in forms:
            if form and placeholders(form) != placeholders(english[-1]):
                problems.append(f"{english[0]!r} → {form!r}")
    return problems


@pytest.mark.parametrize("language", TRANSLATED)
def test_every_marked_string_is_translated_and_none_is_fuzzy(language):
    catalog, wanted = catalogue(language), marked()
    assert len(wanted) > 150  # the extraction found the bot's texts
    missing = [m for m in wanted if catalog.get(m) is None]
    fuzzy = [m.id for m in catalog if m.id and m.fuzzy]
    untranslated = [m.id for m in catalog if m.id and not all(m.string if isinstance(m.string, tuple) else [m.string])]
    assert not missing, f"run `make locales`, then translate: {missing}"
    assert not fuzzy and not untranslated, (fuzzy, untranslated)
    plural_forms = catalog.num_plurals
    assert all(len(m.string) == plural_forms for m in catalog if isinstance(m.id, tuple))


@pytest.mark.parametrize("language", TRANSLATED)
def test_translations_keep_every_placeholder(language):
    assert placeholder_problems(catalogue(language)) == []


def test_a_dropped_or_renamed_placeholder_is_found():
    broken = Catalog(locale="ru")
    broken.add("Remix #{track_id}", "Ремикс #{track}")  # renamed
    broken.add("🎼 Composing {bar} {pct}%", "🎼 Сочиняю {bar}")  # dropped
    broken.add("{word!r} is not a channel", "{word} — не канал")  # the conversion lost
    broken.add(("{n} track", "{n} tracks"), ("{n} трек", "{n} трека", "много треков"))  # a form without the count
    broken.add("from {low} to {high}", "от {low} до {high}")  # as it should be
    assert len(placeholder_problems(broken)) == 4


@pytest.mark.parametrize(
    "code, language",
    [
        ("ru", "ru"),
        ("ru-RU", "ru"),
        ("ru_RU", "ru"),
        ("RU", "ru"),
        (discord.Locale.russian.value, "ru"),
        ("en", "en"),
        ("en-US", "en"),
        ("de", "en"),
        ("uk", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_language_codes_find_their_catalogue_or_english(code, language):
    assert language_of(code) == language
    assert translator(code) is translator(language)


def test_russian_counts_take_their_three_forms():
    t = translator("ru")
    said = [
        t.ngettext("{n} track per {s} s each", "{n} tracks per {s} s each", n).format(n=n, s=60)
        for n in (1, 3, 5, 11, 21)
    ]
    assert [s.split(" за ")[0] for s in said] == ["1 трек", "3 трека", "5 треков", "11 треков", "21 трек"]
    assert ENGLISH.ngettext("{n} track per {s} s each", "{n} tracks per {s} s each", 1) == "{n} track per {s} s each"


def test_a_group_of_candidates_is_counted_in_russian_forms():
    t = translator("ru")
    assert candidates_progress("queued", 2, 0, 0, 0, None, None, t) == "⏳ В очереди… (2 варианта)"
    ready = [candidates_progress("rendering", 4, n, 9, 9, None, None, t).split(" · ")[-1] for n in (0, 1, 2)]
    assert ready == ["готово 0 из 4", "готов 1 из 4", "готовы 2 из 4"]
    assert candidates_missing(3, ["✖️ Отменено"], t) == "1 из 3 вариантов не получился: ✖️ Отменено"


def test_a_usage_error_is_english_as_raised_and_said_in_the_reader_s_language():
    with pytest.raises(UsageError) as caught:
        parse("/compose jazz inst=guitr")
    assert "did you mean: guitar or jazz guitar?" in str(caught.value)
    assert "может быть, guitar или jazz guitar?" in caught.value.said(translator("ru"))  # a phrase within a phrase
    assert caught.value.said(ENGLISH) == str(caught.value)


def test_every_genre_has_a_name_in_each_language():
    for language in TRANSLATED:
        t = translator(language)
        assert all(genre_label(g, t) != genre_label(g, ENGLISH) for g in GENRES), language

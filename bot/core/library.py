"""The user's own tracks: reading one (only theirs, or one shared where they are), favourites,
numbered pages of history and favourites, their settings, and recording a share. What it says is
in the asker's language (`Who.locale`)."""

from __future__ import annotations

from collections.abc import Callable

from bot.core.recipes import DEFAULT_SECONDS
from bot.core.requests import PageAsk, SetFavourite, SettingsAsk, TrackAsk, Where, Who
from bot.grammar import UsageError
from bot.i18n import ENGLISH, N_, Translations, translator
from bot.replies import ONLY_THE_ASKER, USAGE, Listing, Reply, TrackCard, caption, genre_label, track_buttons
from generator.vocab import display_name
from storage import Database, Forbidden, NotFound, Track, User
from storage.favorites import add_favorite, is_favorite, list_favorites, remove_favorite
from storage.shares import record_share
from storage.tracks import Page, get_track, history
from storage.users import get_or_create_user, get_user, set_defaults


def card(track: Track, platform: str, t: Translations = ENGLISH) -> TrackCard:
    """How a stored track is shown: its caption, title, file names and this platform's upload."""
    return TrackCard(
        track_id=track.id,
        genre=track.genre,
        title=f"{genre_label(track.genre, t)} #{track.id}",
        stem=f"{display_name(track.genre)}-{track.id}",
        caption=caption(
            track.id,
            track.genre,
            track.duration_s,
            track.seed,
            track.sampling,
            track.instrument,
            parent_id=track.parent_id,
            lineage=track.lineage,
            t=t,
            arrangement=track.arrangement,
        ),
        duration_s=track.duration_s,
        file_id=(track.file_ids or {}).get(platform),
        mp3_key=track.mp3_key,
        midi_key=track.midi_key,
        png_key=track.png_key,
        arrangement=track.arrangement,
    )


def track_line(track: Track, t: Translations = ENGLISH) -> str:
    m, s = divmod(round(track.duration_s), 60)
    temp = track.sampling.get("temperature", 1.0)
    return f"#{track.id} {genre_label(track.genre, t)} · {m}:{s:02d} · seed {track.seed} · temp {temp:g}"


def settings_text(user: User, saved: bool, t: Translations = ENGLISH) -> str:
    """The defaults; the values stay as they are typed (genre=ambient), in every language."""
    genre = display_name(user.default_genre) if user.default_genre else t.gettext("none (say it each time)")
    temp = f"{user.default_temperature:g}" if user.default_temperature is not None else t.gettext("the genre's preset")
    title = t.gettext("✅ Saved. Your defaults:") if saved else t.gettext("Your defaults:")
    values = t.gettext("genre: {genre}\ntemperature: {temp}\nlength: {seconds} s\ninstrument: {instrument}")
    seconds, instrument = user.default_seconds or round(DEFAULT_SECONDS), user.default_instrument or "piano"
    return f"{title}\n{values.format(genre=genre, temp=temp, seconds=seconds, instrument=instrument)}"


# One answer whether the track does not exist or is someone else's: told apart, they would let
# anyone find out, number by number, which tracks exist.
NO_TRACK = N_("there is no track #{track_id} of yours or shared here")


def unreadable(exc: NotFound | Forbidden, track_id: int) -> UsageError:
    """Storage's refusal to read a track, as words for the asker in their language (the same for
    a track that does not exist and for someone else's)."""
    return UsageError(NO_TRACK, track_id=track_id)


class Library:
    """The service's reading and bookkeeping side (mixed into `CommandService`)."""

    platform: str
    db: Database

    async def user(self, who: Who) -> User:
        """The asker's account, created on first sight."""
        return await self.db.run(lambda s: get_or_create_user(s, who.platform, who.user_id, who.name))

    async def readable(self, user: User, track_id: int, where: Where) -> Track:
        """The track if the user may read it here (their own, or shared here); UsageError if not."""
        try:
            return await self.db.run(lambda s: get_track(s, track_id, user, where.channel))
        except (NotFound, Forbidden) as exc:
            raise unreadable(exc, track_id) from None

    async def track(self, ask: TrackAsk) -> TrackCard | Reply:
        """A track the asker may read here, or why not."""
        user, t = await self.user(ask.origin.who), translator(ask.origin.who.locale)
        try:
            return card(await self.readable(user, ask.track_id, ask.origin.where), self.platform, t)
        except UsageError as exc:
            return Reply(exc.said(t), kind=USAGE)

    async def pick(self, ask: TrackAsk) -> TrackCard | Reply:
        """Keep N under a group of candidates: the picked track, only for the user who asked for
        them (the group may be shared into the chat, where anyone may read it), or why not."""
        user, t = await self.user(ask.origin.who), translator(ask.origin.who.locale)
        try:
            return card(await self.db.run(lambda s: get_track(s, ask.track_id, user)), self.platform, t)
        except (NotFound, Forbidden):  # the same words for both, as NO_TRACK
            return Reply(t.gettext(ONLY_THE_ASKER), kind=USAGE)

    async def favourite(self, ask: SetFavourite) -> Reply:
        """⭐ / ★: favourite or un-favourite a track the user can read here. `favourite` None turns it
        over: in a shared chat the button cannot show each member their own state, so it always
        reads ⭐, and a second press must take the favourite back. The reply's buttons show the state."""
        user, track_id, where = await self.user(ask.origin.who), ask.track_id, ask.origin.where
        t = translator(ask.origin.who.locale)

        async def toggle(s):
            track = await get_track(s, track_id, user, where.channel)
            add = ask.favourite if ask.favourite is not None else not await is_favorite(s, user, track_id)
            if add:
                await add_favorite(s, user, track_id, where.channel)
            else:
                await remove_favorite(s, user, track_id)
            return track, await is_favorite(s, user, track_id)

        try:
            track, now = await self.db.run(toggle)
        except (NotFound, Forbidden) as exc:
            return Reply(unreadable(exc, track_id).said(t), kind=USAGE)
        text = t.gettext("⭐ Added to your favourites") if now else t.gettext("Removed from your favourites")
        # the card too, so that a platform redrawing the buttons shows the track's own 🎸 toggle
        return Reply(text, track_buttons(track_id, now, t), track=card(track, self.platform, t))

    async def page(self, ask: PageAsk) -> Listing:
        """Page `page_no` (from 1) of the user's history or favourites; no lines past the last page.
        Pages are keyset pages underneath, so a numbered one is reached by walking from the first."""
        user = await self.user(ask.origin.who)
        fetch = history if ask.kind == "history" else list_favorites

        async def walk(s) -> Page[Track] | None:
            before = None
            for _ in range(ask.page_no - 1):
                earlier = await fetch(s, user, ask.size, before)
                if earlier.next_before is None:
                    return None
                before = earlier.next_before
            return await fetch(s, user, ask.size, before)

        found = await self.db.run(walk)
        if found is None:
            return Listing(ask.kind, ask.page_no, [])
        t = translator(ask.origin.who.locale)
        lines = [track_line(track, t) for track in found.items]
        return Listing(ask.kind, ask.page_no, lines, found.next_before is not None)

    async def settings(self, ask: SettingsAsk) -> Reply:
        """Show the user's defaults, after changing those given."""
        who, values = ask.origin.who, dict(ask.values)
        if values.get("seconds"):
            values["seconds"] = round(values["seconds"])

        async def apply(s):
            user = await get_or_create_user(s, who.platform, who.user_id, who.name)
            if values:
                await set_defaults(s, user, **values)
            return user

        return Reply(settings_text(await self.db.run(apply), bool(values), translator(who.locale)))

    async def shared(self, ask: TrackAsk, into: Where, message_id: str | int | None) -> None:
        """📤 /share: the asker posted the track into `into` (they may read it where they asked)."""
        user, source = await self.user(ask.origin.who), ask.origin.where.channel
        await self.db.run(lambda s: record_share(s, user, ask.track_id, into.channel, message_id, source))

    async def own_track_to_send(self, who: Who, track_id: int) -> TrackCard | None:
        """The asker's own track `track_id`, if it was uploaded to this platform before (so it can
        be sent by file id): what 📤 Share's chat picker posts. Looks up only: creates no account."""

        async def find(s):
            user = await get_user(s, who.platform, who.user_id)
            if user is None:
                return None
            try:
                shown = card(await get_track(s, track_id, user), self.platform, translator(who.locale))
            except (NotFound, Forbidden):
                return None
            return shown if shown.file_id else None

        return await self.db.run(find)

    async def favourites_to_send(
        self, who: Who, matches: Callable[[TrackCard], bool], before: int | None, most: int, pages: int
    ) -> tuple[list[TrackCard], int, int | None]:
        """The asker's own favourites that match and were uploaded to this platform before (so
        they can be sent by file id), up to `most`, reading at most `pages` pages: (those, how
        many matched without an upload, the cursor for more). Looks up only: creates no account."""

        t = translator(who.locale)

        async def find(s):
            user = await get_user(s, who.platform, who.user_id)
            found: list[TrackCard] = []
            skipped, cursor = 0, before
            if user is None:
                return found, skipped, None
            for _ in range(pages):
                # ask for exactly what is missing, so the cursor never passes a favourite unseen
                page = await list_favorites(s, user, most - len(found), cursor)
                for shown in filter(matches, (card(track, self.platform, t) for track in page.items)):
                    if shown.file_id:
                        found.append(shown)
                    else:
                        skipped += 1
                cursor = page.next_before
                if cursor is None or len(found) >= most:
                    break
            return found, skipped, cursor

        return await self.db.run(find)

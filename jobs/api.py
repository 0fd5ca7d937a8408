"""The job API the bots use, whatever runs the jobs: a request, progress events, refusals.

Torch-free on purpose: the chat front ends import this, never the model.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, Protocol

from generator.errors import GeneratorError
from generator.params import GenerationRequest, Overrides, SamplingParams

MAX_PRIMER_BYTES = 1_000_000  # a MIDI file a user attaches to continue from
PRIMER_SECONDS = 20.0  # how much of its end the model hears

# "released" never reaches a front end (JobBackend.events ends without it): a Redis worker's
# runner let the job go (shutting down, or another worker took it over), and whoever composes it
# now tells its user.
EventKind = Literal["queued", "running", "rendering", "done", "failed", "cancelled", "released"]
TERMINAL: tuple[EventKind, ...] = ("done", "failed", "cancelled", "released")


@dataclass(frozen=True)
class Piece:
    """A stored piece to render again as it is (with another instrument): its tokens as stored
    (the genre token and all), and the model that composed them, which the new track's recipe names."""

    tokens: tuple[int, ...]
    model: str
    checkpoint_sha256: str


@dataclass(frozen=True)
class ComposeRequest:
    """A user's request: who asks, what genre, their overrides of the genre preset, the length."""

    platform: str
    user_id: str
    genre: str
    display_name: str = ""
    locale: str = "en"  # the asker's language, for the front end's words when it delivers (after a restart too)
    seconds: float | None = 30.0
    tokens: int | None = None
    sampling: Overrides = field(default_factory=Overrides)  # in place of the genre preset's values
    seed: int | None = None
    instrument: str = "piano"
    arrangement: str | None = None  # "solo" or "band"; None: the genre's own (generator.arrange)
    primer: tuple[int, ...] = ()
    primer_ref: str | None = None
    parent_track_id: int | None = None
    lineage: str | None = None  # reroll, hotter, cooler, continue, instrument
    idempotency_key: str | None = None  # e.g. "telegram:update:123456" so a redelivery composes once
    # Where the front end shows the result (e.g. {"chat_id": 1, "message_id": 2}); opaque to the
    # backends, stored with the request so a bot restarted mid-job can still deliver it.
    reply_to: dict[str, Any] | None = None
    # Render this piece, nothing composed: the rest of the request is its recipe, kept for the new track.
    render: Piece | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.sampling, Overrides):  # a mapping, as stored or as a test writes it
            object.__setattr__(self, "sampling", Overrides.from_json(self.sampling))
        if isinstance(self.render, Mapping):  # as stored
            piece = Piece(tuple(self.render["tokens"]), self.render["model"], self.render["checkpoint_sha256"])
            object.__setattr__(self, "render", piece)

    @property
    def arranged(self) -> str:
        """The arrangement this request renders with: the one asked for, or its genre's."""
        from generator.arrangements import check_arrangement, default_arrangement

        return check_arrangement(self.arrangement) if self.arrangement else default_arrangement(self.genre)

    def generation_request(
        self, presets: Mapping[str, SamplingParams] | None = None, controls: bool = True
    ) -> GenerationRequest:
        """What the generator composes for this request (its seed drawn already: jobs.admission);
        raises generator.GeneratorError with a user-facing message. `controls`: whether the model
        follows attribute controls (sparse, soft, …); asked of one that does not, they are
        refused here rather than ignored."""
        seconds, tokens = (self.seconds, self.tokens) if self.tokens is None else (None, self.tokens)
        overrides = self.sampling
        # a piece rendered again keeps its recipe whole: no model follows (or refuses) its controls
        if not controls and overrides.controls.any and self.render is None:
            if self.lineage is None:
                raise GeneratorError(
                    f"this composer's model has no attribute controls; compose without {overrides.controls.describe()}"
                )
            # a reroll or continuation of a track from a model that had them: the levels came
            # with the track (its preset), not from the user, so the piece is composed without
            overrides = overrides.without_controls()
        return GenerationRequest(
            self.genre,
            overrides.resolve(self.genre, presets),
            max_new_tokens=tokens,
            max_seconds=seconds,
            seed=self.seed,
            primer=tuple(self.primer),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["sampling"] = self.sampling.given()
        data["primer"] = list(self.primer)
        if self.render is not None:
            data["render"]["tokens"] = list(self.render.tokens)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ComposeRequest:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["primer"] = tuple(values.get("primer", ()))
        return cls(**values)  # a stored sampling mapping becomes Overrides in __post_init__


@dataclass(frozen=True)
class JobEvent:
    job_id: int
    kind: EventKind
    position: int | None = None  # place in the queue, when queued
    done: int = 0  # tokens written, when running
    total: int = 0
    eta_s: float | None = None
    track_id: int | None = None  # when done
    reason: str | None = None  # when failed or cancelled: words for the user

    @property
    def terminal(self) -> bool:
        return self.kind in TERMINAL

    @classmethod
    def stored(cls, job: Any) -> JobEvent:
        """What a stored job (storage.Job) stands at: queued, running, or how it ended."""
        return cls(job.id, job.state.value, track_id=job.track_id, reason=job.error)


def primer_from_midi(data: bytes, seconds: float = PRIMER_SECONDS) -> tuple[int, ...]:
    """The last `seconds` of a user's MIDI file as a primer; bad files raise Refused with words
    for the user. Torch-free (pretty_midi only), so the bots may call it before submitting."""
    from generator.tokenizer import primer_tokens

    if len(data) > MAX_PRIMER_BYTES:
        raise Refused(f"that MIDI file is {len(data) / 1e6:.1f} MB; send one up to {MAX_PRIMER_BYTES // 1_000_000} MB")
    try:
        return tuple(primer_tokens(data, seconds, "end"))
    except GeneratorError as exc:
        raise UnusableMidi(str(exc), getattr(exc, "fault", None)) from None


class Refused(Exception):
    """The job was not accepted (busy, quota); the message is for the user."""


class UnusableMidi(Refused):
    """A MIDI file that cannot be continued. `fault`: what is wrong with it, a key of
    `generator.tokenizer.MIDI_FAULTS` (None: the message says it, in English)."""

    def __init__(self, message: str, fault: str | None = None) -> None:
        super().__init__(message)
        self.fault = fault


@dataclass(frozen=True)
class PendingJob:
    """A queued or running job, with the request it was submitted with (reply_to included)."""

    job_id: int
    request: ComposeRequest


class JobBackend(Protocol):
    async def submit(self, request: ComposeRequest) -> int: ...

    async def submit_all(self, requests: Sequence[ComposeRequest]) -> list[int]:
        """One user's requests accepted together (a chat's candidates), each idempotent by its
        key: all of them, or Refused with none stored when they do not all fit the caps."""
        ...

    async def cancel(self, job_id: int, platform: str, user_id: str) -> bool: ...
    def events(self, job_id: int) -> AsyncIterator[JobEvent]: ...

    async def undelivered(self, platform: str) -> list[PendingJob]:
        """This platform's jobs whose ending the user has not seen, oldest first: queued, running,
        or ended (done, failed) without a receipt while the front end was away. A restarted
        front end follows each, as if just submitted, to deliver the result."""
        ...

    async def delivered(self, job_id: int) -> None:
        """The front end's receipt: the user has seen how the job ended."""
        ...

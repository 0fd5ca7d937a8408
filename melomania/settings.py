"""Every setting in one place: environment variables MELOMANIA_* or a .env file.

| variable                | default                                   | what it is                         |
|-------------------------|-------------------------------------------|------------------------------------|
| MELOMANIA_CHECKPOINT    | the shipped default model, if present     | model weights (ours or published)  |
| MELOMANIA_SOUNDFONT     | /usr/share/sounds/sf2/FluidR3_GM.sf2      | General MIDI soundfont (.sf2)      |
| MELOMANIA_OUT_DIR       | out                                       | where the CLI writes tracks        |
| MELOMANIA_THREADS       | all cores (a small model: 1)              | CPU threads for the model          |
| MELOMANIA_EXACT_DECODING | false                                    | fp32 throughout, no bfloat16           |
| MELOMANIA_DEVICE        | auto (a CUDA GPU when present, else cpu)  | auto, cpu, cuda or cuda:N          |
| MELOMANIA_DTYPE         | auto (bf16 on a GPU that has it; the CPU's own choices) | auto, fp32, bf16 or fp16 |
| MELOMANIA_CUDA_GRAPHS   | false                                     | replay decode steps as CUDA graphs |
| MELOMANIA_DATABASE_URL  | sqlite+aiosqlite:///data/melomania.db     | SQLite file, or postgresql+asyncpg |
| MELOMANIA_DATABASE_RETRY_S | 30                                    | how long to retry an unreachable database |
| MELOMANIA_DATA_DIR      | data                                      | artifact store (MP3, MIDI, PNG)    |
| MELOMANIA_REDIS_URL     | (none: jobs run in-process)               | Redis for `melomania worker`s      |
| MELOMANIA_RATE_PER_USER | 6                                         | tracks a minute one user may ask   |
| MELOMANIA_RATE_PER_CHAT | 20                                        | tracks a minute one chat may ask   |
| MELOMANIA_TELEGRAM_WEBHOOK_URL    | (none: long polling)            | public https URL for Telegram      |
| MELOMANIA_TELEGRAM_WEBHOOK_LISTEN | 127.0.0.1                       | where the webhook server listens   |
| MELOMANIA_TELEGRAM_WEBHOOK_PORT   | 8443                            | (behind a TLS-terminating proxy)   |
| MELOMANIA_TELEGRAM_WEBHOOK_SECRET | random per start                | the header Telegram must send      |
| MELOMANIA_TELEGRAM_TOKEN          | (none)                          | the Telegram bot's token (secret)  |
| MELOMANIA_DISCORD_TOKEN           | (none)                          | the Discord bot's token (secret)   |
| MELOMANIA_DISCORD_TEST_GUILD      | (none: global commands)         | sync slash commands to one guild   |

The environment wins over .env; .env is read from the working directory. Secrets (tokens, the
webhook secret) are SecretStr and URLs that may hold passwords are kept out of every repr.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.limits import Limits, RateLimiter
from generator.device import Placement

SHIPPED_CHECKPOINT = Path(str(files("generator").joinpath("checkpoints", "melomania-small.pt")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MELOMANIA_", env_file=".env", extra="ignore")

    checkpoint: Path | None = None
    soundfont: Path | None = None
    out_dir: Path = Path("out")
    threads: int | None = None
    exact_decoding: bool = False
    device: str = "auto"  # generator.device: checked here, resolved against the machine where a model loads
    dtype: str = "auto"
    cuda_graphs: bool = False
    # URLs may carry passwords: kept out of every repr, so a logged Settings shows none
    database_url: str = Field("sqlite+aiosqlite:///data/melomania.db", repr=False)
    database_retry_s: float = Field(30.0, gt=0)  # covers a restart of PostgreSQL; then "unavailable"
    data_dir: Path = Path("data")
    redis_url: str | None = Field(None, repr=False)
    rate_per_user: int = Field(6, ge=1)
    rate_per_chat: int = Field(20, ge=1)
    telegram_webhook_url: str | None = None
    telegram_webhook_listen: str = "127.0.0.1"
    telegram_webhook_port: int = Field(8443, ge=1, le=65535)
    telegram_webhook_secret: SecretStr | None = None  # SecretStr: never printed by a repr or a log
    telegram_token: SecretStr | None = Field(None, repr=False)
    discord_token: SecretStr | None = Field(None, repr=False)
    discord_test_guild: int | None = None

    @field_validator("device", "dtype")
    @classmethod
    def _spelt_right(cls, value: str, info) -> str:
        return getattr(Placement(**{info.field_name: value}), info.field_name)

    def placement(self, device: str | None = None, dtype: str | None = None) -> Placement:
        """Where a model runs: `device` and `dtype` (a command line's) over the settings'."""
        return Placement(device or self.device, dtype or self.dtype, self.cuda_graphs)

    def checkpoint_path(self) -> Path | None:
        """The configured checkpoint, else the shipped default model, else None."""
        if self.checkpoint is not None:
            return self.checkpoint
        return SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.is_file() else None

    def limits(self) -> Limits:
        """The chat front ends' rate limits: so many tracks a minute per user and per chat."""
        return Limits(RateLimiter(self.rate_per_user, 60.0), RateLimiter(self.rate_per_chat, 60.0))

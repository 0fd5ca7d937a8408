"""Every setting in one place: environment variables MELOMANIA_* or a .env file.

| variable                | default                                   | what it is                         |
|-------------------------|-------------------------------------------|------------------------------------|
| MELOMANIA_CHECKPOINT    | the shipped default model, if present     | model weights (ours or published)  |
| MELOMANIA_SOUNDFONT     | /usr/share/sounds/sf2/FluidR3_GM.sf2      | General MIDI soundfont (.sf2)      |
| MELOMANIA_OUT_DIR       | out                                       | where the CLI writes tracks        |
| MELOMANIA_THREADS       | torch's default (all cores)               | CPU threads for the model          |
| MELOMANIA_DATABASE_URL  | sqlite+aiosqlite:///data/melomania.db     | SQLite file, or postgresql+asyncpg |
| MELOMANIA_DATA_DIR      | data                                      | artifact store (MP3, MIDI, PNG)    |
| MELOMANIA_REDIS_URL     | (none: jobs run in-process)               | Redis for `melomania worker`s      |
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

SHIPPED_CHECKPOINT = Path(str(files("generator").joinpath("checkpoints", "melomania-small.pt")))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MELOMANIA_", env_file=".env", extra="ignore")

    checkpoint: Path | None = None
    soundfont: Path | None = None
    out_dir: Path = Path("out")
    threads: int | None = None
    database_url: str = "sqlite+aiosqlite:///data/melomania.db"
    data_dir: Path = Path("data")
    redis_url: str | None = None

    def checkpoint_path(self) -> Path | None:
        """The configured checkpoint, else the shipped default model, else None."""
        if self.checkpoint is not None:
            return self.checkpoint
        return SHIPPED_CHECKPOINT if SHIPPED_CHECKPOINT.is_file() else None

# Melomania: the bots, the CLI and the generator worker in one image (docker-compose.yml runs it).
#   docker build -t melomania .                                   # CPU torch (default)
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t melomania:cuda .
# Everything it writes (the SQLite database, tracks, artifacts) goes under /data, a volume owned by
# the image's user (uid 10001). tests/test_docker_image.py installs exactly what the COPY lines
# below copy and runs the CLI from it: a package left out here fails that test.
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# FluidSynth with Debian's General MIDI soundfont, ffmpeg for MP3; python3 for CUDA bases without one;
# tini as PID 1, to reap the ffmpeg of a render process that died (jobs/render_pool.py); gcc to build
# the attention kernel at image build (generator/attention_kernel.py); DejaVu for the piano roll labels.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      fluidsynth fluid-soundfont-gm ffmpeg ca-certificates tini gcc fonts-dejavu-core \
      $(command -v python3 >/dev/null || echo python3 python3-pip python3-venv) \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}

# The dependencies first, read off pyproject.toml, so code edits don't reinstall them.
COPY pyproject.toml README.md LICENSE ./
RUN python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
      > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Every package of the distribution (pyproject.toml [tool.setuptools.packages.find]), the default
# checkpoint (generator/checkpoints/) and the migrations included, and the training configs.
COPY generator/ generator/
COPY training/ training/
COPY melomania/ melomania/
COPY storage/ storage/
COPY migrations/ migrations/
COPY jobs/ jobs/
COPY bot/ bot/
COPY configs/ configs/
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 melomania \
 && mkdir -p /data/out && chown -R melomania /data

USER melomania
# The decoding attention kernel, built for the CPU that builds the image (-march=native; a
# container on another CPU finds none and decodes with an fp32 cache, saying so once).
RUN melomania build-kernel || true

ENV MELOMANIA_DATA_DIR=/data \
    MELOMANIA_OUT_DIR=/data/out \
    MELOMANIA_DATABASE_URL=sqlite+aiosqlite:////data/melomania.db
VOLUME ["/data"]
# Relative paths (a `--out tracks`, `data build`'s default) land on the volume too.
WORKDIR /data

# No HEALTHCHECK: the CLI is one-shot, and the bot and the worker serve no port to probe; compose
# restarts them when they exit, and starts them once Postgres and Redis pass their own checks.
ENTRYPOINT ["tini", "-s", "--", "melomania"]
CMD ["--help"]

# Melomania: the bot, the CLI and the generator worker in one image.
#   docker build -t melomania .                                   # CPU torch (default)
#   docker build --build-arg BASE=nvidia/cuda:12.8.1-runtime-ubuntu24.04 \
#                --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 -t melomania:cuda .
ARG BASE=python:3.11-slim-bookworm
FROM ${BASE}

ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1

# FluidSynth with Debian's General MIDI soundfont, ffmpeg for MP3; python3 for CUDA bases without one;
# tini as PID 1, to reap the ffmpeg of a render process that died (jobs/render_pool.py); gcc to build
# the attention kernel for the CPU the container runs on (generator/attention_kernel.py).
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      fluidsynth fluid-soundfont-gm ffmpeg ca-certificates tini gcc \
      $(command -v python3 >/dev/null || echo python3 python3-pip python3-venv) \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN pip install --index-url ${TORCH_INDEX} torch==${TORCH_VERSION}

# Dependencies first so code edits don't reinstall them.
COPY pyproject.toml README.md ./
COPY generator/__init__.py generator/
COPY melomania/__init__.py melomania/
RUN pip install . && pip uninstall -y melomania

# The code and the default checkpoint (generator/checkpoints/) baked in.
COPY generator/ generator/
COPY melomania/ melomania/
COPY configs/ configs/
RUN pip install --no-deps . \
 && useradd --create-home --uid 10001 melomania \
 && mkdir -p /data && chown melomania /data
USER melomania
# The decoding attention kernel, built for the CPU that builds the image (-march=native; a
# container on another CPU finds none and decodes with an fp32 cache, saying so once).
RUN melomania build-kernel || true
ENV MELOMANIA_OUT_DIR=/data/out
VOLUME ["/data"]

ENTRYPOINT ["tini", "-s", "--", "melomania"]
CMD ["--help"]

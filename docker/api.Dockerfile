# syntax=docker/dockerfile:1
# The API image: FastAPI plus the CPU build of torch for the predictor. Training runs in the workers.
# Built by docker-compose.yml from the project root: docker build -f docker/api.Dockerfile .
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The same install steps as .ci/run and scripts/up: into the image's Python, not editable, and the
# CPU wheels of torch (no CUDA libraries in an image that never trains). Debian's Fashion-MNIST
# package comes with it. The pip cache lives in a build cache, not in the image. The dependencies
# come first, in a layer of their own: a change to the code does not reinstall torch. No dev extras
# (test tools) in the image.
COPY pyproject.toml README.md ./
COPY scripts/install scripts/install
RUN --mount=type=cache,target=/root/.cache/pip \
    LRCAM_VENV=none LRCAM_EDITABLE=0 TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu LRCAM_EXTRAS='' LRCAM_DEPS_ONLY=1 \
    bash scripts/install \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    LRCAM_VENV=none LRCAM_EDITABLE=0 TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu LRCAM_EXTRAS='' \
    bash scripts/install \
    && rm -rf build /var/lib/apt/lists/*

# Named volumes mounted on /data take this ownership on first use.
RUN useradd --create-home --uid 10001 lrcam \
    && mkdir -p /data/datasets /data/artifacts /app/var \
    && chown -R lrcam:lrcam /data /app/var
USER 10001

EXPOSE 8000
CMD ["uvicorn", "service.main:app", "--host", "0.0.0.0", "--port", "8000"]

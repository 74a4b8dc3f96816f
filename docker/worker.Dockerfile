# syntax=docker/dockerfile:1
# The worker image: one Celery process that trains on one NVIDIA GPU. torch's wheels carry their own
# CUDA libraries; the CUDA base image adds what the NVIDIA container toolkit expects of an image
# (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES, the compat libraries). The host needs only the
# driver (580 or newer for CUDA 13, the CUDA of the default torch wheel on PyPI) and the toolkit.
# Built by docker-compose.yml from the project root: docker build -f docker/worker.Dockerfile .
FROM nvidia/cuda:13.0.0-base-ubuntu24.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH

# gcc and the Python headers: torch.compile's Triton builds its launcher with them at run time.
# Not pinned (DL3008): the base image's Ubuntu release fixes them, and pins of Ubuntu's versions
# break the build at each security update.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev gcc g++ \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app

# The same install steps as .ci/run and scripts/up, not editable. Ubuntu's own Python refuses
# packages installed by pip (PEP 668), so they go into a virtual environment at /opt/venv, which
# PATH puts first. torch comes from PyPI: its default Linux build is the CUDA one. Debian's
# Fashion-MNIST package is installed when the distribution has it (a warning otherwise). The
# dependencies come first, in a layer of their own: a change to the code does not reinstall torch.
# No dev extras (test tools) in the image.
COPY pyproject.toml README.md ./
COPY scripts/install scripts/install
RUN --mount=type=cache,target=/root/.cache/pip \
    LRCAM_VENV=/opt/venv LRCAM_EDITABLE=0 LRCAM_EXTRAS='' LRCAM_DEPS_ONLY=1 \
    bash scripts/install \
    && rm -rf /var/lib/apt/lists/*
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    LRCAM_VENV=/opt/venv LRCAM_EDITABLE=0 LRCAM_EXTRAS='' \
    bash scripts/install \
    && rm -rf build /var/lib/apt/lists/*

# Named volumes mounted on /data take this ownership on first use.
RUN useradd --create-home --uid 10001 lrcam \
    && mkdir -p /data/datasets /data/artifacts /data/compile-cache /app/var \
    && chown -R lrcam:lrcam /data /app/var
USER 10001

CMD ["celery", "-A", "worker.celery_app", "worker", "--pool=solo", "--concurrency=1", "--loglevel=INFO"]

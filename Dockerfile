# superscale: fal's AuraSR API, self-hosted. One image for GPU and CPU hosts.
#
#   GPU (default): docker build -t superscale .
#                  docker run --gpus all -p 8000:8000 -v superscale-data:/data -v superscale-models:/models superscale
#   CPU:           docker build -t superscale:cpu --build-arg BASE=python:3.11-slim \
#                    --build-arg TORCH="torch --index-url https://download.pytorch.org/whl/cpu" .
#   (TORCH is installed first, on its own: the CPU index holds torch, not our other dependencies.)
#   Weights baked in: --build-arg PULL="v1 v2" (else `superscale pull` fills the /models volume
#   once, or the server downloads on first use).
#
# Every setting is an environment variable (SUPERSCALE_*; see the README). The server drains on
# SIGTERM (`docker stop`): running jobs finish within SUPERSCALE_SHUTDOWN_GRACE seconds or go
# back to the queue, and it exits 0. Builds with the legacy builder too (no RUN --mount).

# A public CUDA runtime image with Python and a CUDA build of torch.
ARG BASE=pytorch/pytorch:2.5.1-cuda12.4-cudnn9-runtime
FROM ${BASE}

# What pip installs torch from: empty keeps the base image's torch (the CUDA build above).
ARG TORCH=""
# Extra pip arguments (a local wheel folder: "--find-links /src/wheels").
ARG PIP_ARGS=""
# Build-time only: a folder of the build context holding extra CA certificates for a
# TLS-intercepting proxy. Empty for every image users get.
ARG EXTRA_CA=""

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    SUPERSCALE_HOST=0.0.0.0 \
    SUPERSCALE_PORT=8000 \
    SUPERSCALE_DATA_DIR=/data \
    SUPERSCALE_MODEL_DIR=/models \
    HF_HOME=/models/.hf

# A base without Python (a plain Debian, say) gets Debian's.
RUN if ! command -v python3 >/dev/null 2>&1; then \
        apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
            python3 python3-venv python3-pip ca-certificates \
        && rm -rf /var/lib/apt/lists/*; \
    fi

COPY pyproject.toml README.md /src/
COPY src /src/src
COPY docker /src/docker
RUN set -e; \
    if [ -n "$EXTRA_CA" ]; then \
        cp /src/$EXTRA_CA/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; \
        export PIP_CERT=/etc/ssl/certs/ca-certificates.crt; \
    fi; \
    python3 -m venv --system-site-packages /opt/superscale; \
    if [ -n "$TORCH" ]; then /opt/superscale/bin/pip install $PIP_ARGS $TORCH; fi; \
    /opt/superscale/bin/pip install $PIP_ARGS /src; \
    rm -rf /src; \
    if [ -n "$EXTRA_CA" ]; then \
        rm -f /usr/local/share/ca-certificates/*.crt && update-ca-certificates --fresh >/dev/null; \
    fi
ENV PATH=/opt/superscale/bin:$PATH

RUN useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin superscale \
    && mkdir -p /data /models \
    && chown superscale:superscale /data /models
USER superscale
# Checkpoints to download into /models at build time ("v1 v2"; checked by `superscale pull`);
# empty: none. Declared here so that changing it rebuilds only this layer.
ARG PULL=""
ARG HF_ENDPOINT=""
RUN if [ -n "$PULL" ]; then \
        HF_ENDPOINT=${HF_ENDPOINT:-https://huggingface.co} \
        superscale pull $PULL --model-dir /models --no-progress; \
    fi

VOLUME ["/data", "/models"]
EXPOSE 8000
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD python3 -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"SUPERSCALE_PORT\", \"8000\")}/health', timeout=2)"
ENTRYPOINT ["superscale"]
CMD ["serve"]

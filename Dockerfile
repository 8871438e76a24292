# canary-bot production image.
#   docker build -t canary-bot .
#   docker run -p 3000:3000 -e SLACK_BOT_TOKEN -e SLACK_SIGNING_SECRET \
#     -v "$PWD/config.yaml:/etc/canary-bot/config.yaml:ro" canary-bot
# The base is pinned by digest (tag python:3.11.11-slim-bookworm), so that a rebuild gets the very
# image that was tested; the product is installed from constraints.txt, the versions CI tests.

# Build stage: the package and its dependencies go into a venv that is copied whole, so the
# runtime image carries no pip cache, build tools or source tree.
# Only the product: the sandbox distribution (emulators, demo) is not copied or installed.
FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5 AS build
WORKDIR /src
RUN python -m venv /opt/venv
COPY pyproject.toml README.md constraints.txt ./
COPY bot ./bot
COPY handlers ./handlers
COPY rollout ./rollout
RUN /opt/venv/bin/pip install --no-cache-dir -c constraints.txt . \
    && /opt/venv/bin/pip uninstall --yes pip setuptools wheel

# tag: python:3.11.11-slim-bookworm (the same image as the build stage)
FROM python:3.11.11-slim-bookworm@sha256:081075da77b2b55c23c088251026fb69a7b2bf92471e491ff5fd75c192fd38e5
# A fixed numeric UID, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
RUN groupadd --system --gid 10001 canary \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /var/lib/canary-bot --shell /usr/sbin/nologin canary \
    && mkdir -p /var/lib/canary-bot /etc/canary-bot \
    && chown 10001:10001 /var/lib/canary-bot
COPY --from=build /opt/venv /opt/venv
# MPLCONFIGDIR: matplotlib writes a font cache, and the root filesystem may be read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    MPLCONFIGDIR=/tmp/matplotlib \
    CANARY_CONFIG=/etc/canary-bot/config.yaml
# The SQLite file lives here (mount a volume); a relative store.path lands here too.
WORKDIR /var/lib/canary-bot
USER 10001:10001
# 3000: /slack/events (public); 9100: /healthz, /readyz, /metrics (admin, never public)
EXPOSE 3000 9100
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9100/healthz', timeout=4)"]
ENTRYPOINT ["canary-bot"]
CMD ["serve", "--host", "0.0.0.0", "--port", "3000", "--admin-port", "9100"]

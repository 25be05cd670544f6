FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 DATA_DIR=/data

RUN useradd --create-home --uid 10001 castbot && mkdir /data && chown castbot /data
WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
COPY migrations ./migrations
COPY discord_sandbox ./discord_sandbox
RUN pip install -e .

USER castbot
VOLUME ["/data"]
# SIGTERM closes the gateway, HTTP clients and the database within 10 s.
STOPSIGNAL SIGTERM
# With HTTP_PORT set, healthy means /healthz answers 200 (the gateway is connected, the database
# takes a write, the tracking loop runs); without it there is nothing to ask and it always passes.
# No curl in the slim image: Python's urllib asks (a 503 raises, so the check fails).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request as u; p = os.environ.get('HTTP_PORT'); sys.exit(0 if not p or u.urlopen(f'http://127.0.0.1:{p}/healthz', timeout=4).status == 200 else 1)"]
CMD ["python", "-m", "bot"]

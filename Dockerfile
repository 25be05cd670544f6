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
CMD ["python", "-m", "bot"]

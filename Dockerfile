# aichat: one process on SQLite. Build: docker build -t aichat .   Run: docker compose up -d
# The builder stage makes the wheel (with the sql/ migrations inside); the final stage installs
# only that wheel and its dependencies. tests/test_packaging.py replays these pip steps.

FROM python:3.11-slim AS builder
WORKDIR /src
COPY . .
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=builder /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl \
    && rm -rf /wheels \
    && useradd --system --uid 10001 --user-group --home-dir /data --no-create-home aichat \
    && mkdir -p /data \
    && chown aichat:aichat /data \
    && chmod 700 /data

ENV DATABASE_URL=/data/app.db \
    HOST=0.0.0.0 \
    PORT=8001
VOLUME /data
WORKDIR /data
USER 10001:10001
EXPOSE 8001
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/api/health' % os.environ.get('PORT', '8001'), timeout=4)"]
STOPSIGNAL SIGTERM
CMD ["aichat"]

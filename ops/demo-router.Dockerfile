# The routemeter demo router (simulated providers, seeded load) for compose.yaml. Build context
# is the repository root: docker build -f ops/demo-router.Dockerfile .
FROM python:3.11-slim-bookworm

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install ".[demo]" && rm -rf /build

RUN useradd --system --uid 10001 --no-create-home routemeter
USER 10001
WORKDIR /

# Exec form: the demo is PID 1 and handles SIGTERM itself (stops the load, flushes the last
# OTLP export through routemeter.shutdown()).
ENTRYPOINT ["routemeter"]
CMD ["demo", "--duration", "600", "--rate", "4", "--no-progress"]

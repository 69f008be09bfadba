# facepipe's code location, Dagster webserver and daemon (docker-compose.yml builds it).
FROM python:3.11-slim-bookworm
ENV PYTHONUNBUFFERED=1 UV_PROJECT_ENVIRONMENT=/opt/venv PATH=/opt/venv/bin:$PATH
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY facepipe ./facepipe
COPY workspace.yaml ./
RUN uv sync --frozen --no-dev
ENV FACEPIPE_IMAGES=/images FACEPIPE_DATA=/data DAGSTER_HOME=/opt/dagster/home
COPY deploy/dagster.yaml /opt/dagster/home/dagster.yaml

# One image for every fleet service (learner, recorder, actors, dashboard, MLflow server):
# compose runs the same `fleet` CLI commands a user runs locally.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    MLFLOW_ENABLE_TELEMETRY=false DO_NOT_TRACK=true
RUN apt-get update && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 fleet
WORKDIR /app
COPY requirements.lock ./
RUN pip install --no-cache-dir uv==0.13.8 && uv pip install --system --no-cache -r requirements.lock
COPY pyproject.toml README.md alembic.ini ./
COPY fleet ./fleet
COPY learner ./learner
COPY actors ./actors
COPY dashboards ./dashboards
COPY migrations ./migrations
RUN uv pip install --system --no-deps --no-cache .
USER fleet
ENTRYPOINT ["fleet"]

# The image of docker-compose.yml's worker and recorder. They use the Kafka in KAFKA_BOOTSTRAP, so there is no
# Java here: infra/kafka/pom.xml is installed as package data but only `papertape run` (embedded) uses it.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
# What the package is built from, and nothing else (`COPY . .` would bring .venv, .git and test caches along)
COPY pyproject.toml README.md /src/
COPY papertape /src/papertape
COPY schemas /src/schemas
COPY agents /src/agents
COPY streams /src/streams
COPY infra /src/infra
RUN pip install --no-cache-dir /src
RUN useradd --system --create-home --home-dir /app papertape
USER papertape
WORKDIR /app
ENTRYPOINT []

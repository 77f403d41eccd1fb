# The image of docker-compose.yml's worker and recorder. They use the Kafka in KAFKA_BOOTSTRAP, so there is no
# Java here: infra/kafka/pom.xml is installed as package data but only `papertape run` (embedded) uses it.

# The wheel, with the compiled core (setup.py: mypyc needs a C compiler, which the running image does without).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
RUN apt-get update && apt-get install -y --no-install-recommends gcc libc6-dev && rm -rf /var/lib/apt/lists/*
# What the package is built from, and nothing else (`COPY . .` would bring .venv, .git and test caches along)
COPY pyproject.toml README.md setup.py mypyc.ini /src/
COPY papertape /src/papertape
COPY schemas /src/schemas
COPY agents /src/agents
COPY streams /src/streams
COPY infra /src/infra
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
RUN useradd --system --create-home --home-dir /app papertape
USER papertape
WORKDIR /app
ENTRYPOINT []

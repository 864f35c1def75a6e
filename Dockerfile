# The officers' console's third-party assets, from the npm registry (package-lock.json).
FROM node:20-slim AS console
WORKDIR /console
COPY console/package.json console/package-lock.json console/.npmrc ./
RUN npm ci --no-audit --no-fund --ignore-scripts

# The application image: `probation api` (with the console at /), `probation ingest` and
# `probation scheduler`.
FROM python:3.11-slim AS app
ENV PYTHONUNBUFFERED=1 UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy
RUN pip install --no-cache-dir uv
WORKDIR /app
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY probation probation
COPY devices devices
COPY geofence geofence
COPY alerts alerts
COPY db db
COPY simulator simulator
COPY bench bench
COPY console/src console/src
COPY --from=console /console/node_modules console/node_modules
RUN uv sync --frozen --no-dev && useradd --system --uid 10001 probation \
    && mkdir -p /var/lib/probation && chown probation /var/lib/probation
USER probation
ENV PATH="/app/.venv/bin:$PATH" PROBATION_DATA_DIR=/var/lib/probation
ENTRYPOINT ["probation"]
CMD ["api", "--host", "0.0.0.0", "--port", "8000"]

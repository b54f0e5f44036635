# GeoTwin service image: Python dependencies and browser assets built in their own stages, run as non-root.
FROM node:20-bookworm-slim AS web
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error

FROM python:3.11-slim-bookworm AS build
WORKDIR /app
RUN python -m venv /opt/venv
COPY pyproject.toml README.md ./
COPY service ./service
RUN /opt/venv/bin/pip install --no-cache-dir .

FROM python:3.11-slim-bookworm
RUN useradd --system --uid 10001 --home /app geotwin
WORKDIR /app
COPY --from=build /opt/venv /opt/venv
COPY --chown=geotwin alembic.ini pyproject.toml ./
COPY --chown=geotwin service ./service
COPY --chown=geotwin schemas ./schemas
COPY --chown=geotwin migrations ./migrations
COPY --chown=geotwin fixtures ./fixtures
COPY --from=web --chown=geotwin /app/node_modules ./node_modules
# The source tree in /app comes first on the path: schemas/, migrations/ and fixtures/ sit beside it.
ENV PATH=/opt/venv/bin:$PATH PYTHONPATH=/app PYTHONUNBUFFERED=1
USER geotwin
EXPOSE 8000
CMD ["geotwin", "serve", "--host", "0.0.0.0", "--port", "8000"]

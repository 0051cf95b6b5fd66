# The tests' stand-in for the official postgres image (no registry here): Debian's PostgreSQL
# with the same environment (POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB, PGPORT).
ARG BASE
FROM ${BASE}
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        postgresql && rm -rf /var/lib/apt/lists/*
COPY postgres-entrypoint.sh /entrypoint.sh
ENTRYPOINT ["/entrypoint.sh"]

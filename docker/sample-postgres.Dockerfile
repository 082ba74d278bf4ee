# The sample database host of docker/compose.yaml: PostgreSQL 17 with pgBackRest from the
# PostgreSQL apt repository (as in docker/Dockerfile: the worker's pgBackRest must be the same
# release). It archives WAL with `pgbackrest archive-push` and serves base backups to the
# worker through `pgbackrest server`; the same image makes the topology's TLS certificates.
FROM postgres:17-bookworm
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends pgbackrest openssl; \
    rm -rf /var/lib/apt/lists/*; \
    pgbackrest version
COPY docker/make-certificates docker/sample-postgres-start /usr/local/bin/

# syntax=docker/dockerfile:1
#
# The singura-vault server image.
#
#   docker build -t singura-vault .
#   docker run --init -p 50051:50051 \
#       -e DATABASE_URL='postgresql://singura_service:...@db:5432/singura?sslmode=verify-full' \
#       -e ENCRYPTION_KEY="$(singura-vault keys generate)" \
#       -e SINGURA_AUTH_SECRET="$(singura-vault keys generate)" \
#       singura-vault
#
# (Keep both keys: generate them once and store them in your secret manager; the
# root key decrypts every credential and the auth secret validates every API key.)
#
# The image is meant to run against an external PostgreSQL (DATABASE_URL; see
# docs/operations.md for the roles a DBA creates and `migrate up`). Without
# DATABASE_URL the vault starts its embedded PostgreSQL in SINGURA_DATA_DIR: that
# is for development only (its data lives in the container unless a volume is
# mounted at /var/lib/singura-vault, and it is not backed up or replicated).

# ---- builder: the project and all its dependencies as wheels ----------------------
FROM python:3.11-slim AS builder

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /src
# Only what the wheel is built from (pyproject.toml names README.md as the readme;
# migrations/ is packaged as singura_vault/_migrations).
COPY pyproject.toml README.md ./
COPY migrations ./migrations
COPY singura_vault ./singura_vault
# Every dependency ships a binary wheel for this platform, so no compiler is needed;
# /wheels then lets the final stage install without a network or a build backend.
RUN pip wheel --wheel-dir /wheels .

# ---- final: the wheels installed into a clean interpreter, run as non-root --------
FROM python:3.11-slim

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1

# A fixed uid/gid so that volume permissions and Kubernetes runAsUser can name it.
# The data directory is used only by the embedded (development) database; it must be
# owned by the vault's user and private to it.
RUN groupadd --system --gid 10001 singura \
    && useradd --system --no-log-init --uid 10001 --gid singura \
        --home-dir /var/lib/singura-vault --shell /usr/sbin/nologin singura \
    && install -d -o singura -g singura -m 0700 /var/lib/singura-vault

# The wheels are bind-mounted from the builder rather than copied, so they never
# become a layer of this image (needs BuildKit). pip byte-compiles at install time,
# which keeps each health probe's start-up short for the non-root user.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/singura_vault-*.whl

# Listen on every interface so that the published port reaches the vault. The vault
# refuses plaintext gRPC on a non-loopback address unless SINGURA_ALLOW_INSECURE=1.
# This default expects a TLS-terminating proxy or service mesh in front: to have the
# vault terminate TLS itself, mount certificates, set SINGURA_TLS_CERT/SINGURA_TLS_KEY
# (and SINGURA_TLS_CLIENT_CA for mTLS), set SINGURA_ALLOW_INSECURE=0, and override the
# HEALTHCHECK with the --tls options (docs/operations.md).
ENV SINGURA_LISTEN=0.0.0.0:50051 \
    SINGURA_ALLOW_INSECURE=1 \
    SINGURA_DATA_DIR=/var/lib/singura-vault

# Numeric, so that Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001

EXPOSE 50051

# grpc.health.v1 on the whole server: SERVING while PostgreSQL answers. The probe
# waits up to 5 s to connect and 5 s for the answer, so the timeout leaves it room;
# start-period covers migrations and the pool's first connections. If you change
# SINGURA_LISTEN's port, override the healthcheck too.
HEALTHCHECK --interval=30s --timeout=15s --start-period=30s --retries=3 \
    CMD ["singura-vault", "health", "--address", "127.0.0.1:50051"]

# Exec form: the vault receives SIGTERM itself and shuts down gracefully within
# SINGURA_SHUTDOWN_GRACE seconds. As PID 1 it ignores SIGTERM until it is serving
# (and reaps no children), hence `docker run --init` (docs/operations.md#shutdown).
ENTRYPOINT ["singura-vault"]
CMD ["serve"]

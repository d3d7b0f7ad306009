# syntax=docker/dockerfile:1
#
# codex-completions-api: the gateway plus the pinned Codex CLI, in one image.
#
#   docker build -t codex-completions-api .
#   docker run --rm -p 11435:11435 -e PROXY_API_KEY=sk-change-me \
#     -e OPENAI_API_KEY=sk-... -v codex-home:/var/lib/codex codex-completions-api
#
# Three stages: `builder` compiles the gateway, `codex` installs the Codex CLI
# version pinned in ./CODEX_VERSION from npm and keeps only its native binary
# and the files next to it, `runtime` is debian-slim with both and a non-root
# user. See deploy/ for compose and systemd, docs/operations.md for running it.

# The base images are build arguments, so the same file builds from the public
# images (the defaults) or from local ones where no registry is reachable:
# ./scripts/image-smoke makes Debian bases with mmdebstrap and passes them.
# The builder's glibc must not be newer than the runtime's. The Rust release is
# the one bench/symbol-order.txt was made with: symbol names change with the
# compiler (a patch release too), and another one builds the same binary
# without that code layout (build.rs, scripts/symbol-order).
ARG RUST_IMAGE=rust:1.95.0-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- builder: the gateway -----------------------------------------------------
FROM ${RUST_IMAGE} AS builder
WORKDIR /src
# Only what the workspace needs to build (every member must be present for
# cargo to read the workspace; CODEX_VERSION is compiled in by include_str!).
COPY Cargo.toml Cargo.lock CODEX_VERSION ./
# The build's settings (SQLite's compile flags) and the release binary's code
# layout (build.rs reads bench/symbol-order.txt).
COPY .cargo ./.cargo
COPY build.rs ./
COPY bench/symbol-order.txt ./bench/
COPY src ./src
COPY layers ./layers
COPY offline-model ./offline-model
# The cache mounts keep the registry and incremental artefacts between builds;
# the binary is copied out of the cached target dir in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p codex-completions-api \
 && install -D -m 0755 target/release/codex-completions-api /out/codex-completions-api
# Smoke check: the binary runs and prints its configuration reference.
RUN /out/codex-completions-api --help >/dev/null \
 && /out/codex-completions-api --version

# --- codex: the pinned Codex CLI, native binary only -------------------------
FROM ${NODE_IMAGE} AS codex
WORKDIR /src
COPY CODEX_VERSION ./
COPY scripts/install-codex.sh ./scripts/
# install-codex.sh picks the platform package for this architecture (x86_64 or
# aarch64), installs @openai/codex@$(cat CODEX_VERSION) and prints the path of
# the native binary: <vendor>/<triple>/bin/codex. We keep that whole <triple>
# directory: bin/ (codex), codex-package.json (the layout file the binary reads
# to find its resources), codex-resources/ (the bundled bubblewrap) and
# codex-path/ (ripgrep). The node wrapper is not used: it only adds start-up
# time and an extra process between the gateway and the worker.
RUN bin="$(CODEX_INSTALL_DIR=/tmp/codex-npm ./scripts/install-codex.sh)" \
 && cp -a "$(dirname "$(dirname "$bin")")" /opt/codex \
 && rm -rf /tmp/codex-npm /root/.npm \
 && /opt/codex/bin/codex --version

# --- runtime -------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
# ca-certificates: the worker calls the model provider over HTTPS.
# curl: the HEALTHCHECK below. tini: PID 1 that forwards SIGTERM to the gateway
# and reaps orphans of the worker (it runs helpers such as getconf).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid/gid, so a bind-mounted CODEX_HOME can be chowned to match.
RUN groupadd --system --gid 10001 codex \
 && useradd --system --uid 10001 --gid codex --home-dir /var/lib/codex \
      --no-create-home --shell /usr/sbin/nologin codex \
 && install -d -o codex -g codex -m 0700 /var/lib/codex

COPY --from=codex /opt/codex /opt/codex
COPY --from=builder /out/codex-completions-api /usr/local/bin/codex-completions-api

# codex-resources on PATH: the worker finds the bundled bubblewrap there
# (otherwise it logs "Codex could not find bubblewrap on PATH" at start-up).
ENV PATH="/opt/codex/bin:/opt/codex/codex-resources:${PATH}" \
    CODEX_BIN=/opt/codex/bin/codex \
    CODEX_HOME=/var/lib/codex \
    HOME=/var/lib/codex \
    PORT=11435 \
    PROXY_LOG_FORMAT=json \
    PROXY_STATE_DIR=/var/lib/codex/state
# Listening on 0.0.0.0 is what a container needs, and the gateway REFUSES to
# start on a non-loopback address unless PROXY_API_KEY is set (or, to accept
# the risk of an open endpoint, PROXY_ALLOW_UNAUTHENTICATED=true). So
# `docker run` without PROXY_API_KEY exits at once with that message.
ENV PROXY_HOST=0.0.0.0
# glibc otherwise keeps the memory of a burst of large uploads for good (its
# mmap threshold grows after the first large free): docs/security.md "Uploads".
ENV MALLOC_MMAP_THRESHOLD_=131072

# Smoke check of the final image: both binaries run here, as the runtime user.
USER codex
RUN codex --version && codex-completions-api --help >/dev/null

# PROXY_STATE_DIR (stored responses, usage, traces) lives on the volume too:
# the root file system may be read-only (compose and the Kubernetes manifests
# make it so), and the default (.codex-api in the working directory) is not
# writable there (found by scripts/image-smoke).
# CODEX_HOME holds codex's state and credentials (auth.json, or a config.toml
# naming a provider). The gateway never rewrites config.toml; see
# docs/configuration.md. Declared after the chown above, so a new named volume
# starts out owned by `codex`.
VOLUME ["/var/lib/codex"]
EXPOSE 11435

# /healthz is liveness: 200 while the process runs, with the worker's state
# (docs/operations.md). The check also fails when that state is "stopped":
# the worker failed WORKER_RESTART_MAX times in a row and the gateway gave up
# on it, which only a restart of the container fixes. A worker that is merely
# restarting stays healthy. Load balancers should route on /readyz instead.
HEALTHCHECK --interval=30s --timeout=3s --start-period=20s --retries=3 \
  CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" | grep -vq '"phase":"stopped"' || exit 1

# SIGTERM starts the graceful shutdown: stop accepting, drain streams for up to
# PROXY_SHUTDOWN_DRAIN_MS (30 s), then stop the worker within
# WORKER_SHUTDOWN_GRACE_MS (5 s). Give `docker stop` more than that: -t 40
# (deploy/docker-compose.yml sets stop_grace_period).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/codex-completions-api"]

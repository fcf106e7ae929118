# Outrigger's container image: a release build on Debian bookworm, run on distroless
# (glibc, CA certificates, no shell, no package manager) as UID 65532.
#
#   docker build -t outrigger:$(git rev-parse --short=12 HEAD) \
#     --build-arg VERSION=0.1.0 --build-arg REVISION=$(git rev-parse HEAD) .
#
# Both base images are pinned by tag. For reproducible builds pin them by digest as well,
# e.g. `FROM rust:1.95.0-bookworm@sha256:<digest>`, with the digest that
# `docker buildx imagetools inspect rust:1.95.0-bookworm` prints; update it deliberately.

FROM rust:1.95.0-bookworm AS builder
WORKDIR /build

# Dependencies first, in a layer of their own: it is rebuilt only when a manifest or
# Cargo.lock changes, not on every source edit. The stand-in sources only satisfy the
# manifests (the library, binaries and benches must exist to be parsed). The workspace's
# other member, the load tool, is never built here: its stand-in stays for the workspace
# to load.
COPY Cargo.toml Cargo.lock ./
COPY loadgen/Cargo.toml ./loadgen/
# A failing step inside a pipe fails the build.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Every bench Cargo.toml declares gets a stub: the manifest does not load without them.
RUN mkdir -p src benches loadgen/src \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > loadgen/src/main.rs \
    && touch src/lib.rs \
    && sed -n '/^\[\[bench\]\]/{n;s/^name = "\(.*\)"$/\1/p}' Cargo.toml \
       | while read -r b; do echo 'fn main() {}' > "benches/$b.rs"; done \
    && cargo build --release --locked --package outrigger --bin outrigger \
    && rm -rf src

# The built-in default configuration is compiled in (`config::DEFAULT`).
COPY config/default.toml ./config/
COPY src ./src
# The copied files may be older than the stand-ins' build: touch them so cargo rebuilds.
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --package outrigger --bin outrigger \
    && ./target/release/outrigger --version \
    && mkdir -p /build/state

FROM gcr.io/distroless/cc-debian12:nonroot

ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown

LABEL org.opencontainers.image.title="outrigger" \
      org.opencontainers.image.description="Log-forwarding sidecar: Fluentd forward protocol in, bounded pipeline, exporters out" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"

# The base image already holds /etc/ssl/certs/ca-certificates.crt (for https:// exporters).
COPY --from=builder /build/target/release/outrigger /outrigger
# The state directory (global.data_dir), owned by the user the process runs as: a named
# volume mounted there starts with this ownership, so the disk buffer can be written.
COPY --from=builder --chown=65532:65532 /build/state /var/lib/outrigger
COPY config/container.toml /etc/outrigger/outrigger.toml

# Read by `outrigger` and by `outrigger health`, so the health check asks the admin address
# the running process was configured with. Mount another file here, or point this elsewhere.
ENV OUTRIGGER_CONFIG=/etc/outrigger/outrigger.toml

# Numeric, so Kubernetes' runAsNonRoot can verify it without an /etc/passwd lookup.
USER 65532:65532
# Forward protocol (TCP, and UDP heartbeat) and the admin listener.
EXPOSE 24224/tcp 24224/udp 2020/tcp
# SIGTERM starts the drain; the default `docker stop` timeout (10 s) is below the drain's
# grace period (20 s): stop with `-t 30` when queues may be long.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["/outrigger", "health"]

ENTRYPOINT ["/outrigger"]
CMD ["run"]

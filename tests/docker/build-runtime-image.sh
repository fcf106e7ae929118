#!/usr/bin/env bash
# Builds `outrigger-local:latest`, the image the Docker end-to-end test runs: the runtime
# stage of the repository's Dockerfile rebuilt FROM scratch (tests/docker/Dockerfile.local),
# because no registry can be reached to pull its bases. The binary is built here, statically
# linked against glibc (no musl target is needed), so the image holds only it, the container
# configuration and the host's CA bundle.
#
# Always runs `cargo build` (a no-op when nothing changed) and `docker build` (cached layers
# when the binary is the same). Honours CARGO_TARGET_DIR. Needs: cargo, docker.
set -euo pipefail

IMAGE="${OUTRIGGER_RUNTIME_IMAGE:-outrigger-local:latest}"
TARGET=x86_64-unknown-linux-gnu
root="$(cd "$(dirname "$0")/../.." && pwd)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"
ca_bundle=/etc/ssl/certs/ca-certificates.crt

for tool in cargo docker; do
    if ! command -v "$tool" >/dev/null; then
        echo "build-runtime-image.sh: \`$tool\` is required but not installed" >&2
        exit 1
    fi
done
[[ -s "$ca_bundle" ]] || { echo "build-runtime-image.sh: no CA bundle at $ca_bundle" >&2; exit 1; }

# `--target` keeps RUSTFLAGS away from build scripts and proc macros (they stay dynamic)
# and the static artefacts apart from the ordinary build's.
(cd "$root" && RUSTFLAGS='-C target-feature=+crt-static' \
    cargo build --release --locked --target "$TARGET" --bin outrigger)
binary="$target_dir/$TARGET/release/outrigger"

# A dynamic binary would fail in the scratch image with a confusing "no such file".
if ! ldd "$binary" 2>&1 | grep -qE 'not a dynamic executable|statically linked'; then
    echo "build-runtime-image.sh: $binary is not statically linked:" >&2
    ldd "$binary" >&2 || true
    exit 1
fi

context="$(mktemp -d)"
trap 'rm -rf "$context"' EXIT
cp "$binary" "$context/outrigger"
cp "$root/config/container.toml" "$context/container.toml"
cp -L "$ca_bundle" "$context/ca-certificates.crt"
cp "$root/tests/docker/Dockerfile.local" "$context/Dockerfile"
mkdir "$context/state"

revision="$(git -C "$root" rev-parse HEAD 2>/dev/null || echo unknown)"
# The commit's time, not now: the same commit gives the same image (and a cache hit).
created="$(git -C "$root" log -1 --format=%cI 2>/dev/null || echo unknown)"
version="$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n 1)"
docker build --quiet \
    --build-arg "VERSION=$version" \
    --build-arg "REVISION=$revision" \
    --build-arg "CREATED=$created" \
    -t "$IMAGE" "$context" >/dev/null
size="$(docker image inspect --format '{{.Size}}' "$IMAGE")"
echo "build-runtime-image.sh: built $IMAGE ($size bytes, revision $revision)"

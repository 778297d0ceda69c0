#!/usr/bin/env bash
# Builds the container images of Strangler, one per deployable binary, tagged
# strangler/<name>:<tag>:
#   docker/build-images.sh [--tag TAG] [--bin-dir DIR] [--base IMAGE] [--only NAME]
# Without --bin-dir it builds the release binaries first (cargo, shared target dir) and uses them.
# --base replaces debian:bookworm-slim (an image with the same glibc: Debian 12).
set -euo pipefail
cd "$(dirname "$0")/.."

tag="$(git describe --always --dirty 2>/dev/null || echo dev)"
bin_dir=""
base="debian:bookworm-slim"
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --tag) tag="$2"; shift 2 ;;
    --bin-dir) bin_dir="$2"; shift 2 ;;
    --base) base="$2"; shift 2 ;;
    --only) only="$2"; shift 2 ;;
    *) echo "unknown argument: $1 (see the header of $0)" >&2; exit 2 ;;
  esac
done

# image name → the binaries it carries; the first is the one the container runs.
declare -A IMAGES=(
  [legacy-monolith]="legacy-monolith"
  [user-service]="user-service"
  [product-service]="product-service"
  [order-service]="order-service"
  [notification-service]="notification-service"
  [strangler-proxy]="strangler-proxy stranglerctl"
  [cdc-sync]="cdc-sync"
  [strangler]="strangler"
)

if [ -z "$bin_dir" ]; then
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/strangler/target}"
  cargo build --release -p legacy-monolith -p user-service -p product-service -p order-service \
    -p notification-service -p strangler-proxy -p cdc-sync -p phases --bins
  bin_dir="$CARGO_TARGET_DIR/release"
fi
if ! docker image inspect "$base" >/dev/null 2>&1 && ! docker pull -q "$base" >/dev/null; then
  echo "base image $base is neither local nor pullable; pass --base" >&2
  exit 1
fi

ctx=$(mktemp -d)
trap 'rm -rf "$ctx"' EXIT
for image in $(printf '%s\n' "${!IMAGES[@]}" | sort); do
  [ -z "$only" ] || [ "$only" = "$image" ] || continue
  read -r -a bins <<<"${IMAGES[$image]}"
  rm -rf "$ctx/bin" && mkdir -p "$ctx/bin"
  for b in "${bins[@]}"; do
    [ -x "$bin_dir/$b" ] || { echo "$bin_dir/$b is missing: build it first" >&2; exit 1; }
    cp "$bin_dir/$b" "$ctx/bin/$b"
  done
  docker build -q -f docker/Dockerfile --build-arg BASE="$base" --build-arg MAIN="${bins[0]}" \
    -t "strangler/$image:$tag" "$ctx" >/dev/null
  echo "strangler/$image:$tag"
done

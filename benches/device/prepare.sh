#!/usr/bin/env bash
# Builds what benches/device/run_all.sh runs on a lent GPU into .device-bin/ (git-ignored; name it
# in the device call's `carry`): the GPU test binaries, the GPU benches (stripped, so they fit
# the carry limit), the Hopper kernel library, and, for an attention tile sweep, that library at
# the tile sizes TILES names (query rows x key rows x stages, e.g. TILES="128x128x2 128x160x2";
# about 2 minutes each on two cores; 192 query rows computed wrong results on the H100).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH=$PWD/.venv/bin:$PATH LIBTORCH_USE_PYTORCH=1
bash scripts/build_sm90_kernels.sh
mkdir -p .device-bin
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
}
{
    cargo test --no-run --message-format=json --test sm90_kernels --test fused_kernels --test streaming
    cargo bench --no-run --message-format=json \
        --bench wan_dit --bench wan_workflow --bench wan_14b --bench wan_vace --bench runtime_gpu
} | executables | while read -r name executable; do
    strip -o ".device-bin/$name" "$executable"
done
cp .venv/videosdgx/libvdgx_sm90.so .device-bin/
for tile in ${TILES-}; do
    IFS=x read -r q kv stages <<<"$tile"
    bash scripts/build_sm90_kernels.sh ".device-bin/tiles/$tile.so" \
        -DVDGX_CTA_Q="$q" -DVDGX_CTA_KV="$kv" -DVDGX_STAGES="$stages" 2>/dev/null
done
du -sh .device-bin

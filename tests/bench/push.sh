#!/usr/bin/env bash
# Benchmark: pushing a ~200 MiB, 20-layer image to a fresh local registry, compose vs
# `skopeo copy oci:… docker://…` of the same layout, side by side in one run; and a re-push of an
# unchanged image.
#
#   tests/bench/push.sh [WORKDIR]
#
# Needs docker-registry, skopeo, hyperfine. Each measured push gets a fresh registry (skopeo
# remembers what it pushed and would mount it otherwise).
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/compose-push-bench.XXXXXX)}
runs=${RUNS:-3}
for t in hyperfine skopeo docker-registry; do
    command -v "$t" >/dev/null || { echo "needs $t" >&2; exit 1; }
done
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
mkdir -p "$work"
cd "$work"

if [ ! -f tree.done ]; then
    python3 - <<'PY'
import os
for layer in range(20):
    d = f"tree/l{layer:02}"
    os.makedirs(d, exist_ok=True)
    for f in range(4):
        # Mostly incompressible, so the image is ~200 MiB compressed.
        with open(f"{d}/f{f}.bin", "wb") as fh:
            fh.write(os.urandom(2_400_000) + bytes(200_000))
PY
    {
        echo 'image "push" {'
        for l in $(seq -w 0 19); do echo "    layer \"l$l\" { copy \"tree/l$l/\" to=\"/data/l$l\" }"; done
        echo '}'
    } > spec.kdl
    touch tree.done
fi
"$compose" build spec.kdl --cache-dir cache >/dev/null 2>&1
echo "image: $(du -sm out/push | cut -f1) MiB in $(ls out/push/blobs/sha256 | wc -l) blobs" >&2

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat > start-registry.sh <<SH
set -e
[ -f registry.pid ] && kill \$(cat registry.pid) 2>/dev/null || true
rm -rf regdata; mkdir -p regdata
printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s/regdata\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:$port\n' "\$PWD" > registry.yml
docker-registry serve registry.yml > registry.log 2>&1 &
echo \$! > registry.pid
for i in \$(seq 100); do curl -sf http://127.0.0.1:$port/v2/ >/dev/null && exit 0; sleep 0.05; done
exit 1
SH
trap '[ -f registry.pid ] && kill $(cat registry.pid) 2>/dev/null || true' EXIT

hyperfine --style basic --runs "$runs" --export-json skopeo.json --prepare 'bash start-registry.sh' \
    "skopeo copy --quiet --dest-tls-verify=false --preserve-digests oci:out/push:latest docker://127.0.0.1:$port/bench/push:1" >&2
hyperfine --style basic --runs "$runs" --export-json compose.json --prepare 'bash start-registry.sh' \
    "$compose push spec.kdl 127.0.0.1:$port/bench/push:1 --insecure-registry 127.0.0.1:$port --cache-dir cache" >&2
"$compose" push spec.kdl "127.0.0.1:$port/bench/push:1" --insecure-registry "127.0.0.1:$port" --cache-dir cache >/dev/null 2>&1
hyperfine --style basic -N --warmup 1 --runs 10 --export-json repush.json \
    "$compose push spec.kdl 127.0.0.1:$port/bench/push:1 --insecure-registry 127.0.0.1:$port --cache-dir cache" >&2

python3 - <<'PY'
import json
med = lambda f: json.load(open(f))["results"][0]["median"]
sk, co, re = med("skopeo.json"), med("compose.json"), med("repush.json")
print(f"skopeo copy oci: -> docker://     {sk:7.3f} s")
print(f"compose push (build is a no-op)    {co:7.3f} s   ratio {co/sk:5.2f}  (goal <= 1.0)")
print(f"compose re-push, unchanged image   {re*1000:7.1f} ms  (goal < 100 ms)")
PY

#!/usr/bin/env bash
# Benchmark: Debian packages into an OCI image, compose vs mmdebstrap --variant=extract + umoci,
# side by side in one run, for busybox-static ca-certificates tzdata curl (bookworm).
#
#   tests/bench/debian.sh [WORKDIR]
#
# The mirror is the host's (its apt sources), as compose itself finds it. Prints ratios to the
# mmdebstrap+umoci time measured in the same run:
#   cold (empty store, no lockfile: indexes and packages downloaded)
#   warm (packages in the store, layers not)                          goal <= 0.5x
#   no-op rebuild                                                     goal < 100 ms
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/compose-debian-bench.XXXXXX)}
runs=${RUNS:-3}
for t in hyperfine mmdebstrap umoci; do
    command -v "$t" >/dev/null || { echo "needs $t (apt-get install $t)" >&2; exit 1; }
done
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "no Debian mirror in the host's apt sources" >&2; exit 1; }

cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
mkdir -p "$work"
cd "$work"
cat > spec.kdl <<'KDL'
image "bench" {
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "busybox-static" "ca-certificates" "tzdata" "curl"
}
KDL
cat > mmdebstrap-umoci.sh <<SH
set -e
rm -rf mm.tar mm-layout
SOURCE_DATE_EPOCH=1700000000 mmdebstrap --quiet --variant=extract --include=busybox-static,ca-certificates,tzdata,curl bookworm mm.tar "$mirror"
umoci init --layout mm-layout
umoci new --image mm-layout:latest
umoci raw add-layer --image mm-layout:latest mm.tar
SH

hyperfine --style basic --runs "$runs" --export-json mm.json 'bash mmdebstrap-umoci.sh' >&2
hyperfine --style basic --runs "$runs" --export-json cold.json \
    --prepare 'rm -rf cache out spec.kdl.lock' "$compose build spec.kdl --cache-dir cache" >&2
# Warm: a store holding only the downloaded packages and indexes (no layers, no records).
"$compose" build spec.kdl --cache-dir cache >/dev/null 2>&1
python3 - <<'PY'
import json, os, shutil
lock = json.load(open("spec.kdl.lock"))
keep = {p["sha256"] for img in lock["images"].values() for pl in img["platforms"].values() for p in pl["packages"]}
shutil.rmtree("debs", ignore_errors=True)
os.makedirs("debs")
for sha in keep:
    shutil.copy2(f"cache/v1/blobs/sha256/{sha}", f"debs/{sha}")
PY
hyperfine --style basic --runs "$runs" --export-json warm.json \
    --prepare 'rm -rf warm out && mkdir -p warm/v1/blobs/sha256 && cp -p debs/* warm/v1/blobs/sha256/' \
    "$compose build spec.kdl --cache-dir warm --locked" >&2
"$compose" build spec.kdl --cache-dir cache >/dev/null 2>&1
hyperfine --style basic -N --warmup 2 --runs 20 --export-json noop.json "$compose build spec.kdl --cache-dir cache" >&2

python3 - <<'PY'
import json
med = lambda f: json.load(open(f))["results"][0]["median"]
mm, cold, warm, noop = med("mm.json"), med("cold.json"), med("warm.json"), med("noop.json")
print(f"mmdebstrap --variant=extract + umoci  {mm:7.3f} s")
print(f"compose cold (download + resolve)     {cold:7.3f} s   ratio {cold/mm:5.2f}")
print(f"compose warm (packages in store)      {warm:7.3f} s   ratio {warm/mm:5.2f}  (goal <= 0.5)")
print(f"compose no-op rebuild                 {noop*1000:7.1f} ms  (goal < 100 ms)")
PY

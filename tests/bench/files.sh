#!/usr/bin/env bash
# Benchmark: compose on a ~200 MiB, ~5,000-file tree, against `tar | gzip -6` in the same run.
#
#   tests/bench/files.sh [WORKDIR]
#
# Prints every figure as a ratio to a baseline measured in this run (hyperfine, several runs):
#   cold build / (tar -c | gzip -6)      goal <= 0.6 on 2 cores
#   no-op rebuild wall time              goal < 50 ms
#   one-file-change rebuild / cold       goal < 5% (tree split over $PARTS `layer` blocks, default
#                                        25: a rebuild redoes one layer, so it costs ~1/PARTS of cold)
#   peak RSS of a cold build             goal < 200 MiB
#   single-layer compressible tree (64 MiB of repetitive text and some random files, one layer):
#   cold build / (tar -c | gzip -6)      goal <= 0.25
#   zstd (--compression zstd), cold build / (tar -c | gzip -6), both trees: goal <= 0.1
#   one layer of both trees (~254 MiB): one changed file / that layer's cold build: goal < 0.1
#                                        (chunk reuse), for a file 70% into the layer
#                                        and for its first file (the worst case); peak RSS
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/compose-bench.XXXXXX)}
runs=${RUNS:-3}
parts=${PARTS:-25}
command -v hyperfine >/dev/null || { echo "needs hyperfine (apt-get install hyperfine)" >&2; exit 1; }

cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
mkdir -p "$work"
cd "$work"

if [ "$(cat tree.done 2>/dev/null)" != "$parts" ]; then
    rm -rf tree cache out
    echo "generating the tree in $work/tree ..." >&2
    python3 - "$parts" <<'PY'
import os, random, sys
parts = int(sys.argv[1])
per_part = 5000 // parts
random.seed(7)
words = [("w%04d" % i).encode() for i in range(3000)]
total = 0
n = 0
for part in range(parts):
    for i in range(per_part):
        d, f = divmod(i, 25)
        base = f"tree/part-{part}/dir-{d:02}"
        os.makedirs(base, exist_ok=True)
        if True:
            size = random.choice([2_000, 8_000, 30_000, 60_000, 90_000])
            if f % 3 == 0:
                data = os.urandom(size)                  # incompressible (media, archives)
            else:
                out = bytearray()
                while len(out) < size:                   # text-like
                    out += random.choice(words) + b" "
                data = bytes(out[:size])
            with open(f"{base}/file-{f:02}.dat", "wb") as fh:
                fh.write(data)
            total += size
            n += 1
print(f"{n} files, {total/2**20:.0f} MiB")
PY
    {
        echo 'image "bench" {'
        for p in $(seq 0 $((parts - 1))); do echo "    layer \"part-$p\" { copy \"tree/part-$p/\" to=\"/data/part-$p\" }"; done
        echo '}'
    } > spec.kdl
    find tree -type f -exec touch -d '2 minutes ago' {} +
    echo "$parts" > tree.done
fi
files=$(find tree -type f | wc -l)
mib=$(du -sm tree | cut -f1)
echo "tree: $files files, $mib MiB in $parts layers; $(nproc) cores" >&2

hyperfine --style basic --runs "$runs" --export-json baseline.json \
    'tar -C tree -c . | gzip -6 > /dev/null' >&2
hyperfine --style basic --runs "$runs" --export-json cold.json \
    --prepare 'rm -rf cache out' \
    "$compose build spec.kdl --cache-dir cache" >&2
"$compose" build spec.kdl --cache-dir cache >/dev/null 2>&1
hyperfine --style basic --warmup 2 --runs 20 --export-json noop.json \
    "$compose build spec.kdl --cache-dir cache" >&2
# One changed file: alternate its content so every run changes it.
hyperfine --style basic --runs 10 --export-json change.json \
    --prepare 'head -c 1000 /dev/urandom > tree/part-3/dir-01/file-05.dat' \
    "$compose build spec.kdl --cache-dir cache" >&2

# Peak RSS of a cold build.
rss_kib=$(python3 - "$compose" <<'PY'
import resource, subprocess, sys, shutil
shutil.rmtree("cache", ignore_errors=True); shutil.rmtree("out", ignore_errors=True)
subprocess.run([sys.argv[1], "build", "spec.kdl", "--cache-dir", "cache"], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)

# The single-layer compressible case.
if [ ! -f single.done ]; then
    rm -rf single && mkdir -p single
    python3 - <<'PY'
import os, random
random.seed(11)
words = [("w%03d" % i).encode() for i in range(400)]
total = 0
i = 0
while total < 64 * 2**20:
    if i % 10 == 9:
        data = os.urandom(200_000)
    else:
        out = bytearray()
        while len(out) < 500_000:
            out += b" ".join(random.choice(words) for _ in range(12)) + b"\n"
        data = bytes(out)
    with open(f"single/f{i:04}.txt", "wb") as fh:
        fh.write(data)
    total += len(data)
    i += 1
PY
    printf 'image "single" {\n    layer "all" { copy "single/" to="/data" }\n}\n' > single.kdl
    find single -type f -exec touch -d '2 minutes ago' {} +
    touch single.done
fi
hyperfine --style basic --runs "$runs" --export-json single-baseline.json \
    'tar -C single -c . | gzip -6 > /dev/null' >&2
hyperfine --style basic --runs "$runs" --export-json single-cold.json \
    --prepare 'rm -rf cache-single out-single' \
    "$compose build single.kdl --cache-dir cache-single --out out-single" >&2

# zstd, both trees.
hyperfine --style basic --runs "$runs" --export-json zstd-cold.json \
    --prepare 'rm -rf cache-zstd out-zstd' \
    "$compose build spec.kdl --cache-dir cache-zstd --out out-zstd --compression zstd" >&2
hyperfine --style basic --runs "$runs" --export-json single-zstd.json \
    --prepare 'rm -rf cache-single out-single' \
    "$compose build single.kdl --cache-dir cache-single --out out-single --compression zstd" >&2

# Both trees in one layer: its cold build, then one changed file (chunk reuse).
mkdir -p first && head -c 1000 /dev/urandom > first/f.txt && touch -d '2 minutes ago' first/f.txt
printf 'image "one" {\n    layer "all" {\n        copy "first/" to="/data/a-first"\n        copy "tree/" to="/data/tree"\n        copy "single/" to="/data/single"\n    }\n}\n' > one.kdl
hyperfine --style basic --runs "$runs" --export-json one-cold.json \
    --prepare 'rm -rf cache-one out-one' \
    "$compose build one.kdl --cache-dir cache-one --out out-one" >&2
one_rss_kib=$(python3 - "$compose" <<'PY'
import resource, subprocess, sys, shutil
shutil.rmtree("cache-one", ignore_errors=True); shutil.rmtree("out-one", ignore_errors=True)
subprocess.run([sys.argv[1], "build", "one.kdl", "--cache-dir", "cache-one", "--out", "out-one"], check=True,
               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
PY
)
one_mib=$(( $(du -sm tree | cut -f1) + $(du -sm single | cut -f1) ))
hyperfine --style basic --runs 10 --export-json one-change.json \
    --prepare 'head -c 1000 /dev/urandom > tree/part-3/dir-01/file-05.dat' \
    "$compose build one.kdl --cache-dir cache-one --out out-one" >&2
# The worst case: the layer's first file (nothing before it is unchanged).
hyperfine --style basic --runs 10 --export-json one-first.json \
    --prepare 'head -c 1000 /dev/urandom > first/f.txt' \
    "$compose build one.kdl --cache-dir cache-one --out out-one" >&2

python3 - "$rss_kib" "$one_rss_kib" "$one_mib" <<'PY'
import json, sys
med = lambda f: json.load(open(f))["results"][0]["median"]
base, cold, noop, change = med("baseline.json"), med("cold.json"), med("noop.json"), med("change.json")
sbase, scold = med("single-baseline.json"), med("single-cold.json")
rss = int(sys.argv[1]) / 1024
print(f"baseline tar|gzip -6         {base:8.3f} s")
print(f"cold build                   {cold:8.3f} s   ratio to baseline {cold/base:5.2f}   (goal <= 0.6)")
print(f"no-op rebuild                {noop*1000:8.1f} ms  ratio to cold     {noop/cold:7.4f} (goal < 50 ms)")
print(f"one-file-change rebuild      {change*1000:8.1f} ms  ratio to cold     {change/cold:7.4f} (goal < 0.05)")
print(f"peak RSS, cold build         {rss:8.1f} MiB (goal < 200 MiB)")
print(f"single layer, tar|gzip -6    {sbase:8.3f} s")
print(f"single layer, cold build     {scold:8.3f} s   ratio to baseline {scold/sbase:5.2f}   (goal <= 0.25)")
zcold, szcold = med("zstd-cold.json"), med("single-zstd.json")
print(f"zstd cold build              {zcold:8.3f} s   ratio to baseline {zcold/base:5.2f}   (goal <= 0.1)")
print(f"single layer, zstd cold      {szcold:8.3f} s   ratio to baseline {szcold/sbase:5.2f}   (goal <= 0.1)")
ocold, ochange = med("one-cold.json"), med("one-change.json")
print(f"one {sys.argv[3]} MiB layer, cold     {ocold:8.3f} s   peak RSS {int(sys.argv[2])/1024:.1f} MiB (goal < 200 MiB)")
ofirst = med("one-first.json")
print(f"  one changed file           {ochange*1000:8.1f} ms  ratio to its cold {ochange/ocold:7.4f} (goal < 0.1; a file 70% into the layer)")
print(f"  its first file changed     {ofirst*1000:8.1f} ms  ratio to its cold {ofirst/ocold:7.4f} (the worst case: every byte hashed again)")
PY

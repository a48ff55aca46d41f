#!/usr/bin/env bash
# Benchmark: build steps against `podman run --rm` of the same root filesystem, in the same run.
#
#   tests/bench/steps.sh [WORKDIR]
#
# Prints (medians of $RUNS runs; needs root, runc, podman, skopeo and the host's Debian mirror):
#   sandbox cost of a step running `true` / `podman run --rm IMAGE true`     goal <= 0.5
#       (compose: `build --check --jobs 1` of $STEPS cached steps, minus a no-op build, per step;
#        podman: one `podman run --rm` per step, storage vfs, runc, no network)
#   specs/go-app: cold build (empty store, packages from the mirror) and no-op build wall times
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/compose-bench-steps.XXXXXX)}
runs=${RUNS:-5}
steps=${STEPS:-20}
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
mkdir -p "$work"
cd "$work"

# Median wall time in seconds of running "$@" $runs times (after one warm-up).
median() {
    python3 - "$runs" "$@" <<'PY'
import subprocess, sys, time
runs, cmd = int(sys.argv[1]), sys.argv[2:]
subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
times = []
for _ in range(runs):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    times.append(time.perf_counter() - t)
times.sort()
print(f"{times[len(times) // 2]:.4f}")
PY
}

{
    echo 'image "tools" {'
    echo '    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"'
    echo '    packages "busybox-static"'
    echo '    files { symlink "/bin/sh" target="busybox"; symlink "/bin/true" target="busybox"; }'
    echo '}'
    for i in $(seq 1 "$steps"); do
        echo "step \"s$i\" { image \"tools\"; env I=\"$i\"; run \"true\"; output \"/out\"; }"
    done
    echo 'image "all" {'
    echo '    files {'
    for i in $(seq 1 "$steps"); do echo "        copy from=\"s$i\" \"/out\" to=\"/s$i\""; done
    echo '    }'
    echo '}'
} > spec.kdl
"$compose" build spec.kdl --cache-dir cache --out out >/dev/null 2>&1
noop=$(median "$compose" build spec.kdl --image all --cache-dir cache --out out)
check=$(median "$compose" build spec.kdl --image all --cache-dir cache --out out --check --jobs 1)

conf=$work/containers.conf
printf '[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=4096:4096"]\nnetns = "none"\n[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n' > "$conf"
export CONTAINERS_CONF=$conf
podman=(podman --root "$work/podman/storage" --runroot "$work/podman/run" --storage-driver vfs)
rm -f tools.tar
skopeo copy -q oci:out/tools:latest oci-archive:tools.tar:localhost/tools:latest
"${podman[@]}" load -q -i tools.tar >/dev/null
podman_run=$(median "${podman[@]}" run --rm localhost/tools:latest true)

python3 - "$noop" "$check" "$steps" "$podman_run" <<'PY'
import sys
noop, check, steps, podman = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
per_step = (check - noop) / steps
print(f"no-op build of {steps} steps:        {noop * 1000:.1f} ms")
print(f"per step (check - no-op) / {steps}:   {per_step * 1000:.1f} ms")
print(f"podman run --rm true:               {podman * 1000:.1f} ms")
print(f"sandbox cost ratio step / podman:   {per_step / podman:.2f}   (goal <= 0.5)")
PY

# The Go example: cold (empty store; packages come from the mirror) and no-op.
rm -rf go go-cache go-out && cp -r "$here/specs/go-app" go
t0=$(date +%s.%N)
"$compose" build go/compose.kdl --cache-dir go-cache --out go-out >/dev/null 2>&1
t1=$(date +%s.%N)
go_noop=$(median "$compose" build go/compose.kdl --cache-dir go-cache --out go-out)
python3 -c "import sys; print(f'go-app cold build: {float(sys.argv[2]) - float(sys.argv[1]):.2f} s; no-op build: {float(sys.argv[3]) * 1000:.1f} ms (goal < 50 ms)')" "$t0" "$t1" "$go_noop"

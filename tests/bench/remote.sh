#!/usr/bin/env bash
# Benchmark: a team's shared cache, over nginx with WebDAV (Bazel HTTP protocol) and over
# docker-registry (oci://), for two specs:
#   files    the ~200 MiB file tree of tests/bench/files.sh
#   debian   specs/debian.kdl (packages from the Debian mirror the host's apt sources name)
# Prints, for each spec and backend, measured in one run:
#   machine B's build (other checkout path, empty store, warm remote) / cold local build  goal <= 0.2
#   the overhead a remote adds to a no-op build                                          goal < 20 ms
#
#   tests/bench/remote.sh [WORKDIR]      (run tests/bench/files.sh WORKDIR first for the tree)
#   SPECS="files" RUNS=5 tests/bench/remote.sh
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/tmp/compose-bench}
runs=${RUNS:-3}
specs=${SPECS:-files debian}
command -v nginx >/dev/null && command -v hyperfine >/dev/null && command -v docker-registry >/dev/null \
    || { echo "needs nginx, docker-registry and hyperfine" >&2; exit 1; }
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
mkdir -p "$work" && cd "$work"
rm -rf remote && mkdir -p remote/root remote/registry
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; return 1; }

http_port=$(free_port)
cat > remote/nginx.conf <<CONF
user root;
daemon off;
pid $PWD/remote/nginx.pid;
error_log $PWD/remote/error.log;
events {}
http {
  access_log off;
  client_body_temp_path $PWD/remote/body;
  server {
    listen 127.0.0.1:$http_port;
    location / { root $PWD/remote/root; dav_methods PUT DELETE; create_full_put_path on; client_max_body_size 0; }
  }
}
CONF
nginx -c "$PWD/remote/nginx.conf" -p "$PWD/remote" &
ngx=$!
reg_port=$(free_port)
printf 'version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: 127.0.0.1:%s\n' \
    "$PWD/remote/registry" "$reg_port" > remote/registry.yml
docker-registry serve remote/registry.yml >remote/registry.log 2>&1 &
reg=$!
trap 'kill -TERM $ngx $reg 2>/dev/null || true' EXIT
wait_port "$http_port" && wait_port "$reg_port"

# bench NAME SRC_DIR SPEC_FILE: machine A at SRC_DIR, machine B a copy elsewhere.
bench() {
    local name=$1 src=$2 spec=$3 a="$PWD/$1/a"
    rm -rf "$name" && mkdir -p "$name" && cp -a "$src" "$a" && cp -a "$src" "$name/b"
    local http="--remote-cache http://127.0.0.1:$http_port/$name"
    local oci="--remote-cache oci://127.0.0.1:$reg_port/cache/$name --insecure-registry 127.0.0.1:$reg_port"
    for backend in http oci; do
        flags=${!backend}
        # Machine A fills the remote.
        (cd "$a" && rm -rf store-a && "$compose" build "$spec" --cache-dir store-a $flags >/dev/null 2>&1)
        hyperfine --style basic --runs "$runs" --export-json "$name/b-$backend.json" \
            --prepare "rm -rf $name/b/store $name/b/out" \
            "cd $name/b && $compose build $spec --cache-dir store $flags --remote-cache-mode ro" >&2
    done
    # Machine A's store now holds everything, known to be in both remotes: no-op builds without
    # and with each remote, measured together.
    (cd "$a" && "$compose" build "$spec" --cache-dir store-a $http >/dev/null 2>&1)
    local noop="$compose build $a/$spec --cache-dir $a/store-a --out $a/out"
    hyperfine --style basic -N --warmup 3 --runs 30 --export-json "$name/noop.json" \
        "$noop" "$noop $http" "$noop $oci" >&2
    hyperfine --style basic --runs "$runs" --export-json "$name/cold.json" --prepare "rm -rf $a/store-cold $a/out" \
        "cd $a && $compose build $spec --cache-dir store-cold" >&2
}

for s in $specs; do
    case $s in
        files)
            [ -f "$work/spec.kdl" ] || { echo "run tests/bench/files.sh $work first" >&2; exit 1; }
            rm -rf filesrc && mkdir filesrc && cp -a tree spec.kdl filesrc/
            bench files filesrc spec.kdl ;;
        debian) bench debian "$here/specs" debian.kdl ;;
    esac
done

SPECS="$specs" python3 - <<'PY'
import json, os
med = lambda f, i=0: json.load(open(f))["results"][i]["median"]
for s in os.environ["SPECS"].split():
    cold, noop = med(f"{s}/cold.json"), med(f"{s}/noop.json")
    print(f"{s}: cold local build {cold:7.3f} s, no-op {noop*1000:6.1f} ms")
    for i, b in enumerate(("http", "oci"), start=1):
        mb, nr = med(f"{s}/b-{b}.json"), med(f"{s}/noop.json", i)
        print(f"  {b:4}  machine B, warm remote, empty store {mb:7.3f} s  ratio {mb/cold:5.2f} (goal <= 0.2)"
              f"   no-op overhead {(nr-noop)*1000:5.1f} ms (goal < 20 ms)")
PY

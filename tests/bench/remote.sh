#!/usr/bin/env bash
# Benchmark: a team's shared HTTP cache (nginx with WebDAV, Bazel protocol) for the ~200 MiB file
# tree of tests/bench/files.sh. Prints, measured in one run:
#   machine B's build (other checkout path, empty store, warm remote) / cold local build  goal <= 0.2
#   the overhead a remote adds to a no-op build                                          goal < 20 ms
#
#   tests/bench/remote.sh [WORKDIR]      (run tests/bench/files.sh WORKDIR first for the tree)
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-/tmp/compose-bench}
runs=${RUNS:-3}
[ -f "$work/spec.kdl" ] || { echo "run tests/bench/files.sh $work first" >&2; exit 1; }
command -v nginx >/dev/null && command -v hyperfine >/dev/null || { echo "needs nginx and hyperfine" >&2; exit 1; }
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
cd "$work"
rm -rf remote machine-b && mkdir -p remote/root machine-b
cp -a tree spec.kdl machine-b/
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
    listen 127.0.0.1:$port;
    location / { root $PWD/remote/root; dav_methods PUT DELETE; create_full_put_path on; client_max_body_size 0; }
  }
}
CONF
nginx -c "$PWD/remote/nginx.conf" -p "$PWD/remote" &
ngx=$!
trap 'kill -TERM $ngx 2>/dev/null || true' EXIT
sleep 0.5
url="http://127.0.0.1:$port"

# Machine A fills the remote.
rm -rf store-a && "$compose" build spec.kdl --cache-dir store-a --remote-cache "$url" >/dev/null 2>&1
hyperfine --style basic --runs "$runs" --export-json cold.json --prepare 'rm -rf store-cold out' \
    "$compose build spec.kdl --cache-dir store-cold" >&2
hyperfine --style basic --runs "$runs" --export-json b.json --prepare 'rm -rf machine-b/store machine-b/out' \
    "cd machine-b && $compose build spec.kdl --cache-dir store --remote-cache $url --remote-cache-mode ro" >&2
hyperfine --style basic -N --warmup 2 --runs 20 --export-json noop.json "$compose build spec.kdl --cache-dir store-a" >&2
hyperfine --style basic -N --warmup 2 --runs 20 --export-json noop-remote.json "$compose build spec.kdl --cache-dir store-a --remote-cache $url" >&2
python3 - <<'PY'
import json
med = lambda f: json.load(open(f))["results"][0]["median"]
cold, b, noop, noopr = med("cold.json"), med("b.json"), med("noop.json"), med("noop-remote.json")
print(f"cold local build                      {cold:7.3f} s")
print(f"machine B, warm remote, empty store   {b:7.3f} s   ratio {b/cold:5.2f}  (goal <= 0.2)")
print(f"no-op build without / with remote     {noop*1000:6.1f} / {noopr*1000:6.1f} ms  overhead {(noopr-noop)*1000:5.1f} ms (goal < 20 ms)")
PY

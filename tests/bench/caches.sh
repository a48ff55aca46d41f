#!/usr/bin/env bash
# Benchmark: incremental compiles in build steps with declared caches, against the host's own
# incremental build of the same one-line change, measured back to back in the same run.
#
#   tests/bench/caches.sh [WORKDIR]
#
# Prints (medians of $RUNS edits; needs root, runc, the host's Debian mirror, crates.io through
# the host's cargo settings, and Go on the host: Debian's golang-go, installed if missing):
#   Rust: a binary crate (150 serde types) with dependencies (serde, serde_json), built by Debian's cargo-web and
#         rustc-web in a step with `cache "/src/target"`, its dependencies vendored by a
#         fixed-output `cargo vendor` step; host: `cargo build --release` (rustup's toolchain),
#         and the same with Debian's cargo-web/rustc-web (the step's own compiler)
#   Go:   specs/go-app with `cache "/root/.cache/go-build"`, then the same spec over a module of 40
#         packages (the change in one the program imports); host: `go build` with the same flags
#   ratio compose rebuild / host rebuild after a one-line change                goal <= 1.5
# and checks that `compose build --check` (the steps again, with empty caches) passes.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/compose-bench-caches.XXXXXX)}
runs=${RUNS:-3}
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
command -v go >/dev/null || apt-get install -y --no-install-recommends golang-go >&2
# Debian's Rust toolchain on the host too, for the same compiler as the step's.
[ -x /usr/bin/rustc ] && [ -x /usr/bin/cargo ] || apt-get install -y --no-install-recommends cargo-web rustc-web >&2
mkdir -p "$work"
cd "$work"

# Seconds taken by "$@".
timed() {
    local t0 t1
    t0=$(date +%s.%N)
    "$@" >/dev/null 2>&1
    t1=$(date +%s.%N)
    python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.3f}')" "$t0" "$t1"
}

median() {
    python3 -c "import sys; v = sorted(map(float, sys.argv[1:])); print(v[len(v) // 2])" "$@"
}

# --- Rust ---------------------------------------------------------------------------------
rm -rf rust rust-host rust-cache rust-out
mkdir -p rust/src
cat > rust/Cargo.toml <<'EOF'
[package]
name = "app"
version = "0.1.0"
edition = "2021"

[dependencies]
serde = { version = "1", features = ["derive"] }
serde_json = "1"
EOF
# An application crate of some size (150 serde types), as the one-line change is made in an app
# whose own compile takes seconds, not in a toy.
python3 - rust/src/main.rs <<'PY'
import sys
out = ["use serde::{Deserialize, Serialize};", ""]
for i in range(150):
    out.append("#[derive(Serialize, Deserialize, Debug, Default, Clone, PartialEq)]")
    out.append(f"pub struct Record{i} {{")
    for f in range(8):
        out.append(f"    pub field_{f}: {['u64', 'String', 'Vec<u32>', 'Option<i64>'][f % 4]},")
    out.append("}")
out.append("")
out.append("fn main() {")
out.append("    let edit = 0;")
out.append("    let mut total = edit;")
for i in range(150):
    out.append(f"    let r: Record{i} = serde_json::from_str(&serde_json::to_string(&Record{i}::default()).unwrap()).unwrap();")
    out.append(f"    total += r.field_0 as usize;")
out.append('    println!("{total}");')
out.append("}")
open(sys.argv[1], "w").write("\n".join(out) + "\n")
PY
(cd rust && cargo generate-lockfile -q)
cp -r rust rust-host
cp -r rust rust-deb
cat > rust/compose.kdl <<'EOF'
image "rust-builder" {
    export #false
    repository "debian" suite="bookworm" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    repository "debian-security" suite="bookworm-security" components="main" keyring="/usr/share/keyrings/debian-archive-keyring.gpg"
    packages "cargo-web" "rustc-web" "ca-certificates" "coreutils"
}
step "vendor" {
    image "rust-builder"
    copy "Cargo.toml" to="/src/Cargo.toml"
    copy "Cargo.lock" to="/src/Cargo.lock"
    text "/src/src/main.rs" "fn main() {}\n"
    run "cargo" "vendor" "--locked" "--manifest-path" "/src/Cargo.toml" "/out/vendor"
    output "/out"
    network #true
}
step "app" {
    image "rust-builder"
    copy from="vendor" "/out/vendor" to="/vendor"
    copy "Cargo.toml" to="/src/Cargo.toml"
    copy "Cargo.lock" to="/src/Cargo.lock"
    copy "src/" to="/src/src"
    text "/src/.cargo/config.toml" "[source.crates-io]\nreplace-with = \"vendored\"\n[source.vendored]\ndirectory = \"/vendor\"\n"
    cache "/src/target"
    workdir "/src"
    run "cargo" "build" "--release" "--offline" "--locked"
    run "cp" "target/release/app" "/out/app"
    output "/out"
}
image "rust-app" { files { copy from="app" "/out/app" to="/usr/local/bin/app" mode=0o755; } }
EOF
rust_build() { "$compose" build rust/compose.kdl --cache-dir rust-cache --out rust-out; }
rust_cold=$(timed rust_build)
(cd rust-host && cargo build --release -q)
deb_cargo() { (cd rust-deb && RUSTC=/usr/bin/rustc /usr/bin/cargo build --release -q); }
deb_cargo
rust_compose=()
rust_host=()
rust_deb=()
for i in $(seq 1 "$runs"); do
    sed -i "s/let edit = [0-9]*;/let edit = $i;/" rust/src/main.rs rust-host/src/main.rs rust-deb/src/main.rs
    rust_compose+=("$(timed rust_build)")
    rust_host+=("$(timed sh -c 'cd rust-host && cargo build --release -q')")
    rust_deb+=("$(timed deb_cargo)")
done
"$compose" build rust/compose.kdl --cache-dir rust-cache --out rust-out --check >/dev/null 2>&1 \
    || { echo "rust: compose build --check failed" >&2; exit 1; }

# --- Go -----------------------------------------------------------------------------------
# go_measure NAME EDIT: NAME/ holds the spec (its sources in NAME/src), NAME-host/ the same
# sources; `EDIT I FILE…` makes change I in the given copies of the edited file. Builds cold,
# then $runs changes built by compose and by the host's `go build` back to back; checks
# `--check`; prints the cold time and the two medians.
go_measure() {
    local name=$1 edit=$2 compose_t=() host_t=() cold i
    go_build() { "$compose" build "$name/compose.kdl" --cache-dir "$name-cache" --out "$name-out" "$@"; }
    go_host_build() {
        (cd "$name-host" && CGO_ENABLED=0 GOCACHE="$work/$name-host-cache" GOFLAGS=-mod=mod GOPROXY=off \
            go build -trimpath -buildvcs=false "-ldflags=-s -w -buildid=" -o "$work/$name-host-bin" .)
    }
    cold=$(timed go_build)
    go_host_build
    for i in $(seq 1 "$runs"); do
        "$edit" "$i"
        compose_t+=("$(timed go_build)")
        host_t+=("$(timed go_host_build)")
    done
    go_build --check >/dev/null 2>&1 || { echo "$name: compose build --check failed" >&2; exit 1; }
    echo "$cold $(median "${compose_t[@]}") $(median "${host_t[@]}")"
}

rm -rf go go-host go-cache go-out
cp -r "$here/specs/go-app" go
cp -r "$here/specs/go-app/src" go-host
edit_go() { sed -i "s/name := \"[a-z0-9]*\"/name := \"world$1\"/" go/src/main.go go-host/main.go; }
go_r=$(go_measure go edit_go)
read -r go_cold go_compose go_host <<<"$go_r"

# A Go module of some size (40 packages of 100 functions each), the one-line change in a package
# the program imports, built by the same spec.
rm -rf gobig gobig-host gobig-cache gobig-out
cp -r "$here/specs/go-app" gobig
rm -rf gobig/src && mkdir -p gobig/src
python3 - gobig/src <<'PY'
import os, sys
root = sys.argv[1]
open(f"{root}/go.mod", "w").write("module example.invalid/big\n\ngo 1.19\n")
imports, calls = [], []
for p in range(40):
    os.makedirs(f"{root}/p{p}")
    body = [f"package p{p}", "", "import \"strings\"", "", "const Edit = 0", ""]
    for f in range(100):
        body.append(f"func F{f}(s string) string {{ return strings.Repeat(s, {f % 7 + 1}) + strings.ToUpper(s[:1]) }}")
    body.append("func All() int { n := Edit; " + " ".join(f"n += len(F{f}(\"x\"));" for f in range(100)) + " return n }")
    open(f"{root}/p{p}/p.go", "w").write("\n".join(body) + "\n")
    imports.append(f"\t\"example.invalid/big/p{p}\"")
    calls.append(f"\tn += p{p}.All()")
main = ["package main", "", "import (", "\t\"fmt\""] + imports + [")", "", "func main() {", "\tn := 0"] + calls + ["\tfmt.Println(n)", "}"]
open(f"{root}/main.go", "w").write("\n".join(main) + "\n")
PY
cp -r gobig/src gobig-host
edit_gobig() { sed -i "s/const Edit = [0-9]*/const Edit = $1/" gobig/src/p7/p.go gobig-host/p7/p.go; }
gobig_r=$(go_measure gobig edit_gobig)
read -r gobig_cold gobig_compose gobig_host <<<"$gobig_r"

python3 - "$rust_cold" "$(median "${rust_compose[@]}")" "$(median "${rust_host[@]}")" "$(median "${rust_deb[@]}")" \
    "$go_cold" "$go_compose" "$go_host" "$gobig_cold" "$gobig_compose" "$gobig_host" <<'PY'
import sys
rc, r, rh, rd, gc, g, gh, bc, b, bh = map(float, sys.argv[1:])
print(f"rust: cold build {rc:.1f} s; one-line change: compose {r:.2f} s, host cargo {rh:.2f} s; ratio {r / rh:.2f} (goal <= 1.5)")
print(f"      host with the step's own toolchain (Debian's cargo-web/rustc-web) {rd:.2f} s; ratio {r / rd:.2f}")
print(f"go (specs/go-app, one file): cold build {gc:.1f} s; one-line change: compose {g:.2f} s, host go {gh:.2f} s; ratio {g / gh:.2f} (compose's fixed cost {g - gh:.2f} s)")
print(f"go module (40 packages): cold build {bc:.1f} s; one-line change: compose {b:.2f} s, host go {bh:.2f} s; ratio {b / bh:.2f} (goal <= 1.5)")
print("compose build --check (empty caches) passed for both")
PY

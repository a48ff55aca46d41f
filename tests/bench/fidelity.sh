#!/usr/bin/env bash
# Fidelity harness: a package set installed by compose (default mode: no maintainer script runs)
# against mmdebstrap (apt + dpkg, scripts run), path by path, differences grouped by cause.
#
#   tests/bench/fidelity.sh [WORKDIR] [SET...]
#
# A SET is a comma-separated package list; by default the five sets below. MODE=run
# compares `maintainer-scripts "run"` instead of the default (emulate). Both sides
# get the Essential set (`variant "essential"` / `--variant=essential`), the same suite
# (bookworm + bookworm-security from the host's apt mirror) and SOURCE_DATE_EPOCH. Needs root,
# mmdebstrap and umoci. Prints, per set: paths compared, identical, and each cause's count with
# examples.
set -euo pipefail
here=$(cd "$(dirname "$0")/../.." && pwd)
work=${1:-$(mktemp -d /tmp/compose-fidelity.XXXXXX)}
shift || true
sets=("$@")
if [ "${#sets[@]}" -eq 0 ]; then
    sets=(
        "base-files,netbase,tzdata,ca-certificates,libc6,libssl3"
        "python3,python3-venv"
        "openjdk-17-jre-headless"
        "nginx"
        "git,curl,mawk,procps,less,postgresql-client"
    )
fi
command -v mmdebstrap >/dev/null || { echo "needs mmdebstrap (apt-get install mmdebstrap)" >&2; exit 1; }
cargo build --release --locked --manifest-path "$here/Cargo.toml" >&2
compose="$here/target/release/compose"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
mkdir -p "$work"
cd "$work"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg
# The host's own Debian mirrors (deb822 or one-line sources), as compose itself finds them.
uris=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/{for (i = 2; i <= NF; i++) print $i}';
       cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '/^deb /{for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:/) {print $i; break}}' || true)
main_uri=$(echo "$uris" | grep -E '/debian/?$' | head -1 || true)
security_uri=$(echo "$uris" | grep -E '/debian-security/?$' | head -1 || true)
[ -n "$main_uri" ] && [ -n "$security_uri" ] || { echo "no debian and debian-security mirrors in the host's apt sources" >&2; exit 1; }

for set in "${sets[@]}"; do
    name=$(echo "$set" | tr ',' '-' | cut -c1-40)
    rm -rf "$name" && mkdir -p "$name" && cd "$name"
    pkgs=$(echo "$set" | sed 's/,/" "/g')
    cat > spec.kdl <<KDL
image "fid" {
    variant "essential"
    maintainer-scripts "${MODE:-emulate}"
    repository "debian" suite="bookworm" components="main" keyring="$keyring"
    repository "debian-security" suite="bookworm-security" components="main" keyring="$keyring"
    packages "$pkgs"
}
KDL
    "$compose" build spec.kdl --cache-dir "$work/cache" >/dev/null 2>compose.log
    umoci unpack --image out/fid:latest bundle >/dev/null
    # The same versions on the mmdebstrap side: pin every locked package.
    pins=$(python3 -c "
import json; l = json.load(open('spec.kdl.lock'))
print(','.join(p['name'] + '=' + p['version'] for p in l['images']['fid']['platforms']['linux/amd64']['packages']))")
    mmdebstrap --variant=essential --mode=root --format=directory --include="$pins" \
        bookworm mm "deb [signed-by=$keyring] $main_uri bookworm main" "deb [signed-by=$keyring] $security_uri bookworm-security main" \
        >/dev/null 2>mm.log || { echo "$set: mmdebstrap failed, see $work/$name/mm.log"; cd ..; continue; }
    python3 - "$set" bundle/rootfs mm <<'PY'
import os, sys, stat, hashlib, re, collections
label, a_root, b_root = sys.argv[1], sys.argv[2], sys.argv[3]
def walk(root):
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            rel = "/" + os.path.relpath(p, root)
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                v = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                v = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                v = ("file", hashlib.sha256(open(p, "rb").read()).hexdigest())
            else:
                v = ("special",)
            out[rel] = (v, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
    return out
a, b = walk(a_root), walk(b_root)
# Causes, first match wins.
causes = [
    ("dpkg database (status -old/available, triggers, scripts in info/)", r"^/var/lib/dpkg/"),
    ("logs and caches (dpkg.log, apt, debconf, ldconfig aux-cache)", r"^/var/(log|cache)/|^/var/lib/apt/|/ld\.so\.cache$"),
    ("Python bytecode", r"\.pyc$|/__pycache__"),
    ("accounts and shadow (passwd/group/shadow/gshadow, -backups)", r"^/etc/(passwd|group|shadow|gshadow|subuid|subgid)-?$"),
    ("alternatives", r"^/etc/alternatives/|^/var/lib/dpkg/alternatives/"),
    ("CA stores", r"^/etc/ssl/certs/|^/etc/ca-certificates"),
    ("mmdebstrap's own setup (apt sources, hostname, resolv, machine-id, mtab, policy-rc.d)",
     r"^/etc/(apt/|hostname|resolv\.conf|machine-id|mtab|hosts)|^/usr/sbin/policy-rc\.d"),
    ("mount points and empty dirs of the rootfs (dev, proc, sys, run, tmp)", r"^/(dev|proc|sys|run|tmp|mnt|media|srv|home|opt|boot)(/|$)"),
]
def cause(p):
    for name, rx in causes:
        if re.search(rx, p):
            return name
    return "other (script-made configuration and files)"
counts = collections.Counter(); examples = collections.defaultdict(list)
same = 0
for p in sorted(set(a) | set(b)):
    if p in a and p in b:
        va, vb = a[p], b[p]
        if va == vb:
            same += 1
            continue
        what = "content" if va[0] != vb[0] else ("mode" if va[1] != vb[1] else "owner")
        kind = f"differs ({what})"
    elif p in a:
        kind = "only in compose"
    else:
        kind = "only in mmdebstrap"
    c = cause(p)
    counts[(c, kind)] += 1
    if len(examples[(c, kind)]) < 4:
        examples[(c, kind)].append(p)
total = len(set(a) | set(b))
print(f"== {label}: {total} paths, {same} identical ({100 * same / total:.1f}%)")
for (c, kind), n in sorted(counts.items(), key=lambda x: -x[1]):
    print(f"   {n:6d}  {kind:20s} {c}: {' '.join(examples[(c, kind)])}")
PY
    cd ..
done

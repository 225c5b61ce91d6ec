#!/usr/bin/env bash
# Install the Tunegraph .deb into a fresh Debian root and use it as an analyst would.
#
#   packaging/linux/check_deb.sh [PATH/TO/tunegraph_*.deb]     # no argument: build it first
#
# Steps: a fresh bookworm root (mmdebstrap --variant=apt, cached as a tarball and unpacked anew
# each time) -> `apt-get install ./tunegraph_*.deb` -> as a non-root user: `tunegraph --version`,
# the desktop entry and icon, Qt's xcb plugin libraries, the GUI offscreen for a few seconds ->
# `tunegraph engine setup --flavour cpu --bundle …` from an offline CPU bundle, with the network cut
# (unshare --net) -> `tunegraph demo` (the example sweep, headless, CPU) -> runs completed with
# adapters -> upgrade -> `dpkg -r` and `dpkg -P` -> the user's data directory is still there.
# Prints the .deb size and timings; exits non-zero on the first failure. Runs as root.
#
# Environment: OUT (.deb folder, /tmp/tg-pkg/out), CHECK (chroot parent, /tmp/tg-pkg/check),
# CACHE (base root, apt archives, bundle; /tmp/tg-pkg/cache), BUNDLE (an existing offline bundle),
# BUNDLE_ARGS (extra build_bundle.py options), BUNDLE_PYTHON (the Python that runs build_bundle.py),
# ENGINE=0 skips the engine set-up and the demo, REQUIRE_GGUF=0 accepts runs without a GGUF
# (a bundle without llama-cpp-python), KEEP=1 leaves the root for inspection.
set -euo pipefail

source "$(dirname "$0")/../chroot_lib.sh"
ENGINE=${ENGINE:-1}
R=$CHECK/root

DEB=${1:-}
if [ -z "$DEB" ]; then
    log "building the .deb"
    OUT=$OUT "$ROOT/packaging/linux/build_deb.sh"
    DEB=$(ls -t "$OUT"/tunegraph_*_amd64.deb | head -1)
fi
[ -f "$DEB" ] || fail "no .deb at $DEB"
DEB_BYTES=$(stat -c %s "$DEB")

# -- a fresh root --------------------------------------------------------------------------------
mkdir -p "$CACHE/apt-archives/partial" "$CHECK"
BASE=$CACHE/$SUITE-apt.tar
if [ ! -f "$BASE" ]; then
    log "creating the base root tarball $BASE (once)"
    mmdebstrap --quiet --variant=apt "$SUITE" "$BASE" "${MIRRORS[@]}"
fi

cleanup() {
    set +e
    unmount_root var/cache/apt/archives
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$R" "$CHECK/upgrade"; fi
}
trap cleanup EXIT
cleanup
fresh_root "$BASE"
# apt's downloads are kept between checks (they are Debian's packages, not ours)
mount --bind "$CACHE/apt-archives" "$R/var/cache/apt/archives"
cp /etc/resolv.conf "$R/etc/resolv.conf"
in_root() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
# as the analyst, in a login shell; the command is one shell string
as_user() { in_root runuser -l "$USER_NAME" -c "$1"; }
as_user_offline() { unshare --net chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 runuser -l "$USER_NAME" -c "$1"; }
in_root useradd --create-home --shell /bin/bash "$USER_NAME"
DATA=/home/$USER_NAME/.local/share/Tunegraph

# -- install -------------------------------------------------------------------------------------
cp "$DEB" "$R/tmp/"
PKG_FILE=/tmp/$(basename "$DEB")
log "apt-get install ./$(basename "$DEB") into the fresh root"
in_root apt-get update -qq
T0=$(date +%s.%N)
T_INSTALL_START=$T0
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PKG_FILE" >"$CHECK/install.log" 2>&1 \
    || { tail -20 "$CHECK/install.log"; fail "apt-get install"; }
T_INSTALL=$(elapsed "$T0")
echo "installed in ${T_INSTALL} s ($(grep -c '^Setting up' "$CHECK/install.log") packages set up)"

log "the installed files"
for f in /usr/bin/tunegraph /opt/tunegraph/tunegraph /opt/tunegraph/uv \
         /usr/share/applications/tunegraph.desktop \
         /usr/share/icons/hicolor/scalable/apps/tunegraph.svg \
         /usr/share/icons/hicolor/48x48/apps/tunegraph.png \
         /opt/tunegraph/_internal/resources/examples/sweep.json \
         /opt/tunegraph/_internal/resources/datasets/support_chats.jsonl; do
    in_root test -e "$f" || fail "$f is missing"
done
ls "$R"/opt/tunegraph/wheels/tunegraph-*.whl >/dev/null || fail "no tunegraph wheel in /opt/tunegraph/wheels"
missing=$(in_root sh -c 'ldd /opt/tunegraph/_internal/PySide6/Qt/plugins/platforms/libqxcb.so \
    /opt/tunegraph/_internal/PySide6/Qt/lib/libQt6XcbQpa.so.6 | grep "not found" || true')
[ -z "$missing" ] || fail "Qt's xcb plugin lacks libraries the package should depend on: $missing"
echo "files, desktop entry, icons, resources and xcb plugin libraries: ok"

VERSION_OUT=$(as_user "tunegraph --version")
echo "tunegraph --version: $VERSION_OUT"
[[ $VERSION_OUT == "tunegraph "* ]] || fail "tunegraph --version printed '$VERSION_OUT'"
as_user "/opt/tunegraph/uv --version"

log "the GUI, offscreen, for 8 seconds"
as_user "QT_QPA_PLATFORM=offscreen tunegraph >gui.log 2>&1 & echo \$! >gui.pid"
sleep 8
if ! as_user 'kill -0 $(cat gui.pid)'; then
    cat "$R/home/$USER_NAME/gui.log" >&2
    fail "the GUI exited within 8 s"
fi
as_user 'kill $(cat gui.pid); sleep 1; kill -9 $(cat gui.pid) 2>/dev/null; true'
if grep -q Traceback "$R/home/$USER_NAME/gui.log"; then
    cat "$R/home/$USER_NAME/gui.log" >&2
    fail "the GUI printed a traceback"
fi
echo "GUI stayed up 8 s, no traceback"
[ -d "$R$DATA" ] || fail "the GUI did not create the data directory $DATA"

# -- engine + headless demo ---------------------------------------------------------------------
T_ENGINE=skipped; T_DEMO=skipped; T_TO_DEMO=skipped
if [ "$ENGINE" = 1 ]; then
    as_user "tunegraph engine --help" >/dev/null 2>&1 \
        || fail "this build has no 'tunegraph engine' command (ENGINE=0 skips this part)"
    BUNDLE=${BUNDLE:-$CACHE/tunegraph-engine-cpu-linux-py311.tar}
    if [ ! -f "$BUNDLE" ]; then
        log "building the offline CPU bundle on the host: $BUNDLE"
        PY=${BUNDLE_PYTHON:-$ROOT/.venv/bin/python}
        # here the PyTorch index is out of reach: CPU torch comes from pip's configured
        # indexes, llama-cpp-python from pip's wheel cache (BUNDLE_ARGS overrides both)
        # shellcheck disable=SC2086
        (cd "$ROOT" && "$PY" packaging/build_bundle.py --flavour cpu --python-version 3.11 \
            --platform linux --out "$BUNDLE" ${BUNDLE_ARGS:---torch-index pip --torch-version 2.13.0+cpu --llama-from-cache})
    fi
    cp "$BUNDLE" "$R/tmp/engine-bundle.tar"
    chmod 644 "$R/tmp/engine-bundle.tar"
    log "tunegraph engine setup from the offline bundle ($(du -h "$BUNDLE" | cut -f1)), no network"
    T0=$(date +%s.%N)
    as_user_offline "tunegraph engine setup --flavour cpu --bundle /tmp/engine-bundle.tar --yes" \
        || fail "tunegraph engine setup"
    T_ENGINE=$(elapsed "$T0")
    as_user "tunegraph engine status"
    log "tunegraph demo (the example sweep on the CPU), no network"
    T0=$(date +%s.%N)
    as_user_offline "tunegraph demo" || fail "tunegraph demo"
    T_DEMO=$(elapsed "$T0")
    T_TO_DEMO=$(elapsed "$T_INSTALL_START")
    as_user "tunegraph supervisor --stop" || true
    as_user "tunegraph runs --json" >"$CHECK/runs.json"
    python3 - "$CHECK/runs.json" "$R" "${REQUIRE_GGUF:-1}" <<'PY' || fail "the demo's runs"
import json, sys
from pathlib import Path
runs, root = json.load(open(sys.argv[1])), Path(sys.argv[2])
assert runs, "no runs"
for run in runs:
    kinds = sorted({a["kind"] for a in run["artifacts"]})
    print(f"  {run['name']:24} {run['state']:10} artifacts: {', '.join(kinds) or '-'}"
          + (f"  warnings: {run['warnings']}" if run["warnings"] else ""))
    assert run["state"] == "completed", f"{run['name']} is {run['state']}: {run.get('error')}"
    assert any("adapter" in k for k in kinds), f"{run['name']} has no adapter"
    for a in run["artifacts"]:
        assert (root / a["path"].lstrip("/")).exists(), f"missing {a['path']}"
gguf = sum(1 for r in runs for a in r["artifacts"] if "gguf" in a["kind"])
print(f"  {len(runs)} runs completed, {gguf} GGUF artifacts")
assert gguf or sys.argv[3] == "0", "no GGUF was exported (REQUIRE_GGUF=0 accepts that)"
PY
fi

# -- upgrade, remove, purge: the data stays -------------------------------------------------------
snapshot() { in_root sh -c "cd $DATA && find . -path ./engine -prune -o -type f -print | sort | xargs md5sum" ; }
BEFORE=$(snapshot)
log "upgrade: the same package with a higher version"
rm -rf "$CHECK/upgrade"
dpkg-deb -R "$DEB" "$CHECK/upgrade"
sed -i 's/^Version: \(.*\)$/Version: \1+check1/' "$CHECK/upgrade/DEBIAN/control"
dpkg-deb --root-owner-group -Zgzip -z1 -b "$CHECK/upgrade" "$R/tmp/tunegraph-upgrade.deb" >/dev/null
in_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/tunegraph-upgrade.deb >/dev/null \
    || fail "upgrade"
in_root dpkg-query -W -f '${Version}\n' tunegraph | grep -q '+check1' || fail "upgrade not installed"
as_user "tunegraph --version" >/dev/null || fail "tunegraph after the upgrade"
[ "$ENGINE" = 1 ] && { as_user "tunegraph engine status --json" | grep -q '"ready": true' \
    || fail "the engine was lost in the upgrade"; }
[ "$(snapshot)" = "$BEFORE" ] || fail "the data directory changed during the upgrade"
echo "upgraded to $(in_root dpkg-query -W -f '${Version}' tunegraph); data and engine kept"

log "dpkg -r tunegraph, then dpkg -P tunegraph"
in_root dpkg -r tunegraph >/dev/null
[ ! -e "$R/opt/tunegraph/tunegraph" ] && [ ! -e "$R/usr/bin/tunegraph" ] \
    && [ ! -e "$R/usr/share/applications/tunegraph.desktop" ] || fail "program files left after dpkg -r"
[ "$(snapshot)" = "$BEFORE" ] || fail "dpkg -r touched the data directory"
in_root dpkg -P tunegraph
[ "$(snapshot)" = "$BEFORE" ] || fail "dpkg -P touched the data directory"
[ ! -e "$R/opt/tunegraph" ] || echo "note: /opt/tunegraph still exists after purge: $(ls -A "$R/opt/tunegraph")"
echo "removed and purged; $DATA kept ($(echo "$BEFORE" | wc -l) files)"

cat <<SUMMARY

== summary
.deb                      $(basename "$DEB"), $(python3 -c "print(f'{$DEB_BYTES/1e6:.1f}')") MB
apt-get install           ${T_INSTALL} s (fresh $SUITE root, Depends included)
engine setup (offline)    ${T_ENGINE} s
headless demo             ${T_DEMO} s
install -> finished demo  ${T_TO_DEMO} s (from apt-get install to the demo's end: install, checks,
                          GUI start, engine setup, demo)
whole check               $(elapsed "$T_START") s
PASS
SUMMARY

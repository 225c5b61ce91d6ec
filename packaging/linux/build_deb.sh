#!/usr/bin/env bash
# Build the Tunegraph .deb from this checkout with Debian's own tools (dpkg-deb).
#
#   packaging/linux/build_deb.sh            # -> $OUT/tunegraph_<version>_amd64.deb
#
# OUT (default /tmp/tg-pkg/out) and WORK (default /tmp/tg-pkg/build) lie outside the repo. The
# build venv (PYTHON, default python3.11 on PATH; PyInstaller bundles its libpython) is kept in
# WORK and reused while packaging/requirements-gui.txt and PYTHON are unchanged. Needs: python3-venv, dpkg-dev,
# desktop-file-utils (lintian is run when installed). Network: PyPI, for the build venv only.
#
# Layout of the package:
#   /opt/tunegraph/tunegraph          the frozen app (GUI with no command, CLI otherwise)
#   /opt/tunegraph/_internal/         Python, Qt, engine/nodes/app, resources/ (examples, datasets)
#   /opt/tunegraph/uv                 uv, which builds the engine environment
#   /opt/tunegraph/wheels/            tunegraph's own wheel, installed into the engine environment
#   /opt/tunegraph/python/bin/python3 -> /usr/bin/python3, the engine environment's base Python
#   /usr/bin/tunegraph                -> /opt/tunegraph/tunegraph
#   /usr/share/applications/tunegraph.desktop, /usr/share/icons/hicolor/*/apps/tunegraph.*
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
OUT=${OUT:-/tmp/tg-pkg/out}
WORK=${WORK:-/tmp/tg-pkg/build}
# The Python that is frozen into the app: needs a shared libpython and Python >= 3.11.4 (tarfile's
# extraction filters, used to unpack offline bundles; Debian 12's python3.11 3.11.2 lacks them).
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
HERE=$ROOT/packaging/linux
t0=$(date +%s)

log() { printf '\n== %s\n' "$*" >&2; }

command -v dpkg-deb >/dev/null || { echo "dpkg-deb is missing (apt-get install dpkg-dev)" >&2; exit 1; }
"$PYTHON" -c 'import sys, tarfile, venv, sysconfig
assert sys.version_info >= (3, 11) and hasattr(tarfile, "data_filter")
assert sysconfig.get_config_var("Py_ENABLE_SHARED")' \
    || { echo "$PYTHON must be Python >= 3.11.4 with venv and a shared libpython (set PYTHON=)" >&2; exit 1; }

# 1. A clean copy of the sources: tracked files plus new, not-ignored ones (no .venv, no caches).
log "copying the sources"
rm -rf "$WORK/src" "$WORK/pkg" "$WORK/dist" "$WORK/pyi" "$WORK/wheels"
mkdir -p "$WORK/src" "$OUT"
if git -C "$ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard) \
        | (cd "$ROOT" && xargs -0 -I{} sh -c 'test -e "{}" && printf "%s\0" "{}"' _) \
        | (cd "$ROOT" && tar --null -T - -cf -) | tar -C "$WORK/src" -xf -
else
    tar -C "$ROOT" --exclude=.venv --exclude=.git -cf - . | tar -C "$WORK/src" -xf -
fi
SRC=$WORK/src
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC/engine/__init__.py")
[ -n "$VERSION" ] || { echo "no __version__ in engine/__init__.py" >&2; exit 1; }

# 2. The build venv: the GUI side only (no torch), plus PyInstaller.
REQ=$SRC/packaging/requirements-gui.txt
STAMP=$WORK/venv/.requirements
if ! { cmp -s "$REQ" "$STAMP" && [ "$(cat "$STAMP.python" 2>/dev/null)" = "$PYTHON" ]; }; then
    log "creating the build venv ($PYTHON)"
    rm -rf "$WORK/venv"
    "$PYTHON" -m venv "$WORK/venv"
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check --upgrade pip
    "$WORK/venv/bin/pip" install -q --disable-pip-version-check -r "$REQ" "pyinstaller==6.22.3"
    cp "$REQ" "$STAMP"
    echo "$PYTHON" >"$STAMP.python"
fi
VPY=$WORK/venv/bin/python

# 3. tunegraph's own wheel (for the engine environment) and the frozen app.
log "building the tunegraph wheel"
"$VPY" -m pip wheel -q --disable-pip-version-check --no-deps --no-build-isolation \
    -w "$WORK/wheels" "$SRC"
WHEEL=$(ls "$WORK"/wheels/tunegraph-"$VERSION"-*.whl)
log "freezing the app with PyInstaller"
(cd "$SRC" && "$VPY" -m PyInstaller --noconfirm --log-level WARN \
    --distpath "$WORK/dist" --workpath "$WORK/pyi" packaging/tunegraph.spec)
"$WORK/dist/tunegraph/tunegraph" --version

# 4. The package tree.
log "laying out the package"
PKG=$WORK/pkg
install -d "$PKG/DEBIAN" "$PKG/opt" "$PKG/usr/bin" "$PKG/usr/share/applications" \
    "$PKG/usr/share/doc/tunegraph"
cp -a "$WORK/dist/tunegraph" "$PKG/opt/tunegraph"
install -m 755 "$WORK/venv/bin/uv" "$PKG/opt/tunegraph/uv"
install -d "$PKG/opt/tunegraph/wheels" "$PKG/opt/tunegraph/python/bin"
# The "relocatable Python" of the engine on Debian/Ubuntu is the system one: `tunegraph engine
# setup` looks for python/bin/python3 beside the executable (engine.setup.environment.SHIPPED_PYTHON).
ln -s /usr/bin/python3 "$PKG/opt/tunegraph/python/bin/python3"
install -m 644 "$WHEEL" "$PKG/opt/tunegraph/wheels/"
ln -s /opt/tunegraph/tunegraph "$PKG/usr/bin/tunegraph"
install -m 644 "$HERE/tunegraph.desktop" "$PKG/usr/share/applications/tunegraph.desktop"
for size in 16 24 32 48 64 128 256; do
    install -D -m 644 "$SRC/resources/icons/tunegraph-$size.png" \
        "$PKG/usr/share/icons/hicolor/${size}x${size}/apps/tunegraph.png"
done
install -D -m 644 "$SRC/resources/icons/tunegraph.svg" \
    "$PKG/usr/share/icons/hicolor/scalable/apps/tunegraph.svg"
install -m 644 "$HERE/copyright" "$PKG/usr/share/doc/tunegraph/copyright"
printf 'tunegraph (%s) unstable; urgency=medium\n\n  * Release %s.\n\n -- Tunegraph <tunegraph@example.org>  %s\n' \
    "$VERSION" "$VERSION" "$(date -R -d @"${SOURCE_DATE_EPOCH:-$(date +%s)}")" \
    | gzip -9n > "$PKG/usr/share/doc/tunegraph/changelog.gz"
install -m 755 "$HERE/postrm" "$PKG/DEBIAN/postrm"
# No byte-compiled caches from the build, sane permissions.
find "$PKG" -name __pycache__ -prune -exec rm -rf {} +
chmod -R u+rwX,go+rX,go-w "$PKG"
find "$PKG/opt/tunegraph/_internal" -type f -name '*.so*' -exec chmod 644 {} +  # libraries need no +x

SIZE_KB=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
# Qt's xcb platform plugin needs these (Qt >= 6.5 also libxcb-cursor0); python3 (>= 3.11) is the
# interpreter the engine environment is built from with uv; libgomp1 is the OpenMP runtime that
# llama-cpp-python's libllama.so (GGUF quantize, chat) loads in the engine environment.
DEPENDS="libc6 (>= 2.36), python3 (>= 3.11), libgomp1, sensible-utils, libgl1, libegl1, libopengl0, libfontconfig1,
 libfreetype6, libglib2.0-0, libdbus-1-3, libx11-6, libx11-xcb1, libxkbcommon0, libxkbcommon-x11-0,
 libxcb1, libxcb-cursor0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0,
 libxcb-render0, libxcb-render-util0, libxcb-shape0, libxcb-shm0, libxcb-sync1, libxcb-xfixes0,
 libxcb-xkb1"
cat > "$PKG/DEBIAN/control" <<CONTROL
Package: tunegraph
Version: $VERSION
Architecture: amd64
Maintainer: Tunegraph <tunegraph@example.org>
Installed-Size: $SIZE_KB
Depends: $(echo $DEPENDS)
Recommends: ca-certificates
Section: science
Priority: optional
Homepage: https://example.org/tunegraph
Description: node-graph studio for LoRA fine-tuning of open LLMs
 Tunegraph fine-tunes open large language models with LoRA/QLoRA on your own
 NVIDIA GPUs by wiring nodes instead of writing scripts: base model, datasets,
 training and LoRA settings feed Fine-Tune nodes; runs are scheduled within the
 GPUs' memory and exported as adapters and GGUF files for Ollama.
 .
 The package holds the desktop app and the tunegraph command. The training
 engine (PyTorch matched to your driver) is set up per user with
 "tunegraph engine setup", online or from an offline bundle.
CONTROL

# 5. Build and check.
DEB=$OUT/tunegraph_${VERSION}_amd64.deb
log "building $DEB"
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
if command -v desktop-file-validate >/dev/null; then
    desktop-file-validate "$PKG/usr/share/applications/tunegraph.desktop"
    echo "desktop-file-validate: ok" >&2
fi
if command -v lintian >/dev/null && [ "${LINTIAN:-1}" = 1 ]; then
    log "lintian (findings are reported, not fatal; see README 'Install')"
    lintian --no-tag-display-limit "$DEB" >"$OUT/lintian.txt" 2>&1 || true
    cut -d: -f2- "$OUT/lintian.txt" | awk '{print $1, $2}' | sort | uniq -c | sort -rn | head -25 >&2
fi
echo "built $DEB ($(du -h "$DEB" | cut -f1), $(( $(date +%s) - t0 )) s; installed size $((SIZE_KB / 1024)) MiB)"

#!/usr/bin/env bash
# Build the per-user Windows installer with Debian's makensis (apt-get install nsis).
#
#   packaging/windows/build_nsis.sh --payload DIR   # DIR: PyInstaller's dist/tunegraph (with
#                                                   # tunegraph.exe, tunegraph-gui.exe) + uv.exe,
#                                                   # wheels\, python\ (what CI assembles)
#   packaging/windows/build_nsis.sh                 # here, on Linux: the payload that can be
#                                                   # assembled without Windows (see below)
#
# Without --payload the installer holds uv.exe (from PyPI's win_amd64 `uv` wheel), tunegraph's
# wheel and tunegraph.cmd, a launcher that runs the wheel through uv (Python and dependencies from
# the network on first start). It exercises the installer itself - per-user install, Start-menu
# shortcut, HKCU uninstall entry, uninstaller that keeps the data - but it is not the product:
# the frozen app exists only in the CI build (.github/workflows/windows-installer.yml).
#
# Output: $OUT/Tunegraph-<version>-setup.exe (OUT defaults to /tmp/tg-pkg/out).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
HERE=$ROOT/packaging/windows
OUT=${OUT:-/tmp/tg-pkg/out}
WORK=${WORK:-/tmp/tg-pkg/nsis}
PAYLOAD=""
GUI_EXE=tunegraph-gui.exe
while [ $# -gt 0 ]; do
    case $1 in
        --payload) PAYLOAD=$2; shift 2 ;;
        --gui-exe) GUI_EXE=$2; shift 2 ;;
        *) echo "usage: $0 [--payload DIR] [--gui-exe NAME]" >&2; exit 2 ;;
    esac
done
command -v makensis >/dev/null || { echo "makensis is missing (apt-get install nsis)" >&2; exit 1; }
PYTHON=${PYTHON:-python3}
# Absolute paths makensis understands: C:/… under Git Bash on Windows (pwd -W), /… on Linux.
abspath() { (cd "$1" && { pwd -W 2>/dev/null || pwd; }); }
VERSION=$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$ROOT/engine/__init__.py")
UV_VERSION=$(sed -n 's/^uv==\([0-9.]*\).*/\1/p' "$ROOT/packaging/requirements-gui.txt")
PIP=${PIP:-$PYTHON -m pip}
t0=$(date +%s)
mkdir -p "$OUT" "$WORK"
OUT=$(abspath "$OUT"); WORK=$(abspath "$WORK"); ROOT=$(abspath "$ROOT"); HERE=$ROOT/packaging/windows

if [ -z "$PAYLOAD" ]; then
    PAYLOAD=$WORK/payload
    rm -rf "$PAYLOAD" "$WORK/dl"
    mkdir -p "$PAYLOAD/wheels" "$WORK/dl"
    echo "== assembling the Linux-side payload: uv.exe $UV_VERSION, tunegraph wheel, launcher" >&2
    $PIP download -q --disable-pip-version-check --no-deps --only-binary=:all: \
        --platform win_amd64 --python-version 3.11 -d "$WORK/dl" "uv==$UV_VERSION"
    $PYTHON - "$WORK/dl" "$PAYLOAD/uv.exe" <<'PY'
import sys, zipfile
from pathlib import Path
wheel = next(Path(sys.argv[1]).glob("uv-*-win_amd64.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/uv.exe"))
    Path(sys.argv[2]).write_bytes(z.read(name))
PY
    $PIP wheel -q --disable-pip-version-check --no-deps -w "$PAYLOAD/wheels" "$ROOT" 2>/dev/null
    cp "$HERE/tunegraph.cmd" "$PAYLOAD/tunegraph.cmd"
    GUI_EXE=tunegraph.cmd
fi
[ -e "$PAYLOAD/$GUI_EXE" ] || { echo "$PAYLOAD has no $GUI_EXE" >&2; exit 1; }
PAYLOAD=$(abspath "$PAYLOAD")

# The File lines and the matching uninstall lines, from the payload as it is.
$PYTHON - "$PAYLOAD" "$WORK/files.nsh" "$WORK/unfiles.nsh" <<'PY'
import os, sys
from pathlib import Path
payload, files_nsh, unfiles_nsh = Path(sys.argv[1]).resolve(), sys.argv[2], sys.argv[3]
win = lambda rel: "$INSTDIR" + ("\\" + str(rel).replace("/", "\\") if str(rel) != "." else "")
install, remove, dirs = [], [], []
for folder, subdirs, names in sorted(os.walk(payload)):
    subdirs.sort()
    rel = Path(folder).relative_to(payload)
    if names:
        install.append(f'SetOutPath "{win(rel)}"')
        install += [f'File "{Path(folder, n).as_posix()}"' for n in sorted(names)]
        remove += [f'Delete "{win(rel / n)}"' for n in sorted(names)]
    if str(rel) != ".":
        dirs.append(rel)
install.append('SetOutPath "$INSTDIR"')
remove += [f'RMDir "{win(d)}"' for d in sorted(dirs, key=lambda d: -len(d.parts))]
Path(files_nsh).write_text("\n".join(install) + "\n")
Path(unfiles_nsh).write_text("\n".join(remove) + "\n")
print(f"{sum(l.startswith('File') for l in install)} files in {len(dirs) + 1} folders")
PY

SETUP=$OUT/Tunegraph-$VERSION-setup.exe
makensis -V2 -DVERSION="$VERSION" -DPAYLOAD="$PAYLOAD" -DFILES="$WORK/files.nsh" \
    -DUNFILES="$WORK/unfiles.nsh" -DGUI_EXE="$GUI_EXE" -DICON="$ROOT/resources/icons/tunegraph.ico" \
    -DOUTFILE="$SETUP" "$HERE/tunegraph.nsi"
echo "built $SETUP ($(du -h "$SETUP" | cut -f1), $(( $(date +%s) - t0 )) s)"

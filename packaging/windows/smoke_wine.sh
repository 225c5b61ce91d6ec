#!/usr/bin/env bash
# Smoke-test the Windows installer under Wine, inside a fresh Debian root (Wine on the host is
# not used: its i386 multiarch breaks on version skew there).
#
#   packaging/windows/smoke_wine.sh [Tunegraph-*-setup.exe]     # no argument: build_nsis.sh first
#
# In a bookworm root (mmdebstrap, with wine64 and xvfb, cached as a tarball, unpacked anew), as a
# non-root user: a new Wine prefix; `setup.exe /S`; the program files, the Start-menu shortcut
# and the HKCU uninstall key (wine reg query); uv.exe runs; a file in %LOCALAPPDATA%\Tunegraph
# stands for the user's data; an upgrade (the installer again over the install); `uninstall.exe
# /S` removes the program, the shortcut and the key and keeps the data; a second install and
# `uninstall.exe /S /REMOVEDATA` removes the data too. Prints timings; non-zero exit on failure.
#
# What this cannot show: SmartScreen, antivirus, Defender folder protection, real NTFS/OneDrive
# paths and the frozen app itself (see README "Install").
set -euo pipefail

source "$(dirname "$0")/../chroot_lib.sh"
R=$CHECK/wine-root

SETUP=${1:-}
if [ -z "$SETUP" ]; then
    OUT=$OUT "$ROOT/packaging/windows/build_nsis.sh"
    SETUP=$(ls -t "$OUT"/Tunegraph-*-setup.exe | head -1)
fi
[ -f "$SETUP" ] || fail "no installer at $SETUP"
VERSION=$(basename "$SETUP" | sed -n 's/^Tunegraph-\(.*\)-setup\.exe$/\1/p')

mkdir -p "$CACHE" "$CHECK"
BASE=$CACHE/$SUITE-wine.tar
if [ ! -f "$BASE" ]; then
    log "creating the Wine root tarball $BASE (once)"
    mmdebstrap --quiet --variant=apt --include=wine,wine64,xvfb,xauth,procps \
        "$SUITE" "$BASE" "${MIRRORS[@]}"
fi
cleanup() {
    set +e
    in_root_quiet() { chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@" >/dev/null 2>&1; }
    [ -d "$R/proc" ] && in_root_quiet pkill -u "$USER_NAME"
    unmount_root
    if [ "${KEEP:-0}" != 1 ]; then rm -rf "$R"; fi
}
trap cleanup EXIT
cleanup
fresh_root "$BASE"
chroot "$R" useradd --create-home --shell /bin/bash "$USER_NAME"
cp "$SETUP" "$R/tmp/setup.exe"
chmod 644 "$R/tmp/setup.exe"

# Every Wine command runs as the analyst, headless (Xvfb), and waits for wineserver to finish:
# NSIS uninstallers copy themselves to %TEMP% and return at once.
wine_do() {
    cat >"$R/tmp/wine-step.sh" <<STEP
export WINEPREFIX=\$HOME/.wine WINEDEBUG=-all WINEDLLOVERRIDES=winemenubuilder.exe=d
$1
rc=\$?
wineserver -w
exit \$rc
STEP
    chmod 644 "$R/tmp/wine-step.sh"
    chroot "$R" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        runuser -l "$USER_NAME" -c "xvfb-run -a sh /tmp/wine-step.sh"
}
H=$R/home/$USER_NAME
C=$H/.wine/drive_c/users/$USER_NAME
INST=$C/AppData/Local/Programs/Tunegraph
INST_IN=/home/$USER_NAME/.wine/drive_c/users/$USER_NAME/AppData/Local/Programs/Tunegraph
DATA=$C/AppData/Local/Tunegraph
LNK="$C/AppData/Roaming/Microsoft/Windows/Start Menu/Programs/Tunegraph.lnk"
KEY='HKCU\Software\Microsoft\Windows\CurrentVersion\Uninstall\Tunegraph'

log "a new Wine prefix"
T0=$(date +%s.%N)
wine_do "wineboot --init" >/dev/null 2>&1 || fail "wineboot"
echo "prefix in $(elapsed "$T0") s"

check_installed() {
    for f in uninstall.exe uv.exe tunegraph.ico; do [ -f "$INST/$f" ] || fail "$f was not installed"; done
    ls "$INST"/wheels/tunegraph-*.whl >/dev/null 2>&1 || fail "the tunegraph wheel was not installed"
    [ -f "$LNK" ] || fail "no Start-menu shortcut at ${LNK#"$R"}"
    REG=$(wine_do "wine reg query '$KEY'" 2>/dev/null | tr -d '\r') || fail "no uninstall key $KEY"
    for v in DisplayName DisplayVersion UninstallString QuietUninstallString EstimatedSize InstallLocation; do
        grep -q "$v" <<<"$REG" || fail "$KEY has no $v"
    done
    grep -q "DisplayVersion.*REG_SZ.*$VERSION" <<<"$REG" || fail "DisplayVersion is not $VERSION"
}

log "setup.exe /S ($(du -h "$SETUP" | cut -f1))"
T0=$(date +%s.%N)
wine_do "wine /tmp/setup.exe /S" || fail "the silent install exited non-zero"
T_INSTALL=$(elapsed "$T0")
check_installed
echo "installed in $T_INSTALL s under ${INST#"$H/.wine/"}"
echo "$REG" | sed -n '/Uninstall\\Tunegraph/,$p'
echo "Start-menu shortcut: ${LNK#"$H/.wine/"}"
UV=$(wine_do "WINEDEBUG=err+module wine $INST_IN/uv.exe --version" 2>&1 | tr -d '\r' || true)
if [[ $UV == *"uv "[0-9]* ]]; then
    echo "installed uv.exe runs: $(grep -o 'uv [0-9].*' <<<"$UV")"
elif [[ $UV == *bcryptprimitives.dll*"not found"* ]]; then
    # Rust >= 1.78 programs import ProcessPrng from bcryptprimitives.dll, which Wine 8.0
    # (Debian 12) lacks; real Windows 10/11 has it. Not a fault of the installer.
    echo "uv.exe not run: Debian 12's Wine 8.0 lacks bcryptprimitives.dll (checked on Windows CI only)"
else
    fail "the installed uv.exe does not run: $(tail -3 <<<"$UV")"
fi

# The user's data (the app would write runs, library and engine here).
mkdir -p "$DATA/runs/example" "$DATA/engine"
echo '{"kind": "status"}' >"$DATA/runs/example/events.jsonl"
echo '{"flavour": "cpu"}' >"$DATA/engine/engine.json"
chroot "$R" chown -R "$USER_NAME:$USER_NAME" "/home/$USER_NAME/.wine/drive_c/users/$USER_NAME/AppData/Local/Tunegraph"

log "upgrade: setup.exe /S over the install"
T0=$(date +%s.%N)
wine_do "wine /tmp/setup.exe /S" || fail "the upgrade install exited non-zero"
check_installed
[ -f "$DATA/runs/example/events.jsonl" ] && [ -f "$DATA/engine/engine.json" ] || fail "the upgrade lost the data"
echo "upgraded in $(elapsed "$T0") s; data kept"

log "uninstall.exe /S"
T0=$(date +%s.%N)
wine_do "wine $INST_IN/uninstall.exe /S" \
    || fail "the silent uninstall exited non-zero"
T_UNINSTALL=$(elapsed "$T0")
[ ! -e "$INST" ] || fail "program files left: $(find "$INST" | head -5)"
[ ! -e "$LNK" ] || fail "the Start-menu shortcut is left"
if wine_do "wine reg query '$KEY'" >/dev/null 2>&1; then fail "the uninstall key is left"; fi
[ -f "$DATA/runs/example/events.jsonl" ] && [ -f "$DATA/engine/engine.json" ] || fail "the uninstaller deleted the data"
echo "uninstalled in $T_UNINSTALL s: program, shortcut and key gone; %LOCALAPPDATA%\\Tunegraph kept"

log "install again, then uninstall.exe /S /REMOVEDATA"
wine_do "wine /tmp/setup.exe /S" || fail "the second install"
check_installed
wine_do "wine $INST_IN/uninstall.exe /S /REMOVEDATA" \
    || fail "uninstall /REMOVEDATA"
[ ! -e "$INST" ] || fail "program files left after /REMOVEDATA"
[ ! -e "$DATA" ] || fail "/REMOVEDATA kept the data folder"
echo "uninstall /REMOVEDATA removed the data too"

cat <<SUMMARY

== summary
installer                 $(basename "$SETUP"), $(python3 -c "print(f'{$(stat -c %s "$SETUP")/1e6:.1f}')") MB
silent install            $T_INSTALL s
silent uninstall          $T_UNINSTALL s
whole smoke test          $(elapsed "$T_START") s (Wine prefix creation included)
PASS
SUMMARY

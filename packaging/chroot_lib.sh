# Shared by packaging/linux/check_deb.sh and packaging/windows/smoke_wine.sh (sourced, not run):
# the folders, the Debian mirrors, messages and timings, and the fresh-root mounts.
# Environment: OUT (installers, /tmp/tg-pkg/out), CHECK (chroot parent, /tmp/tg-pkg/check),
# CACHE (cached base roots and downloads, /tmp/tg-pkg/cache).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-/tmp/tg-pkg/out}
CHECK=${CHECK:-/tmp/tg-pkg/check}
CACHE=${CACHE:-/tmp/tg-pkg/cache}
SUITE=bookworm
MIRRORS=("deb http://deb.debian.org/debian $SUITE main"
         "deb http://deb.debian.org/debian $SUITE-updates main"
         "deb http://deb.debian.org/debian-security $SUITE-security main")
USER_NAME=analyst
T_START=$(date +%s.%N)

log() { printf '\n== %s\n' "$*" >&2; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { python3 -c "import sys; print(f'{float(sys.argv[2]) - float(sys.argv[1]):.1f}')" "$1" "$(date +%s.%N)"; }
[ "$(id -u)" = 0 ] || fail "run as root (chroot, mounts)"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is missing (apt-get install mmdebstrap)"

# unpack the base root tarball $1 into a fresh $R and mount proc, sys and dev in it
fresh_root() {
    mkdir -p "$R"
    tar -C "$R" -xf "$1"
    mount -t proc proc "$R/proc"
    mount -t sysfs sys "$R/sys"
    mount --bind /dev "$R/dev"
    mount --bind /dev/pts "$R/dev/pts"
}

# unmount what fresh_root (and the caller: extra mount points as arguments) mounted in $R
unmount_root() {
    local m
    for m in "$@" dev/pts dev sys proc; do mountpoint -q "$R/$m" && umount -l "$R/$m"; done
}

#!/usr/bin/env bash
# Sets a fresh Debian/Ubuntu machine up for hvuio, from a clone:
#   * apt (only what is missing): a C compiler and Python headers for the cffi core, python3-venv,
#     iproute2 and procps (sysctl) for namespaces, iperf3, ping and capsh for the tests, clang with
#     libFuzzer for the fuzz harnesses, CA certificates for pip;
#   * .venv/ in the clone: a virtual environment of `python3` (the first on PATH) holding the
#     pinned, hash-checked runtime, test and build dependencies of requirements/lock.txt;
#   * hvuio itself, built from the clone's current sources and installed into .venv/ as a
#     regular (not editable) package: .venv/ never imports code from the clone afterwards;
#   * optional, for the DPDK interop test (tests/e2e/test_dpdk_interop.py): Debian 12's DPDK 22.11
#     netvsc runtime via apt (only what is missing) and libdpdk-dev's headers and pkg-config files
#     unpacked, not installed, into .venv/dpdk/. Where apt cannot get them set-up goes on with a
#     warning and that test skips saying so.
# Safe to run again: apt and the venv are left alone when they already fit; hvuio is rebuilt
# and reinstalled every time (the C core must match the sources).
set -euo pipefail
umask 022
cd "$(dirname "$0")/.."

LOCK=requirements/lock.txt
VENV=.venv
STAMP="$VENV/.hvuio-setup"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1

SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"

# --- system packages ---------------------------------------------------------------------------
have() { PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null; }  # a user's PATH may lack sbin
need=()
have gcc || need+=(gcc)
have ip || need+=(iproute2)
have iperf3 || need+=(iperf3)
have ping || need+=(iputils-ping)
have sysctl || need+=(procps)           # hvuio.netdev.netns sets sysctls in the namespaces
have capsh || need+=(libcap2-bin)       # a tap test drops a capability with it
have clang || need+=(clang)             # the fuzz harnesses (libFuzzer, ASan/UBSan) in tests/fuzz
have tcpdump || need+=(tcpdump)         # the demo's trace is read back with tcpdump -r (tests/e2e)
# libFuzzer's runtime: clang's own package on Debian 12 (libclang-rt-14-dev), newer names elsewhere
if have clang && ! clang -print-file-name=libclang_rt.fuzzer-x86_64.a | grep -q /; then
    ver="$(clang -dumpversion | cut -d. -f1)"
    need+=("libclang-rt-$ver-dev")
fi
[ -e /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)  # pip's HTTPS to the index
if ! command -v python3 >/dev/null; then
    need+=(python3 python3-venv python3-dev)
else
    python3 -c 'import os, sys, sysconfig
sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' || need+=(python3-dev)
    # Debian/Ubuntu split ensurepip (which venv needs) into python3-venv.
    python3 -c 'import ensurepip, venv' 2>/dev/null || need+=(python3-venv)
fi
if [ ${#need[@]} -gt 0 ]; then
    if ! command -v apt-get >/dev/null; then
        echo "Error: missing ${need[*]} and there is no apt-get to install them; install them and run again." >&2
        exit 1
    fi
    echo "setup: apt-get install ${need[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"
fi

# --- the virtual environment with the pinned dependencies ---------------------------------------
# It fits when it was made by this python3 from this lock file, belongs to the user running this
# script and nobody else can write to it (root must not run code another user can change).
py="$(python3 -c 'import os, platform, sys; print(os.path.realpath(sys.executable), platform.python_version())')"
lock_sum="$(sha256sum "$LOCK")"
want="$py ${lock_sum%% *}"
if [ -e "$VENV" ] || [ -L "$VENV" ]; then
    why=""
    if [ -L "$VENV" ] || [ ! -d "$VENV" ]; then
        why="it is not a directory"
    elif [ -n "$(find "$VENV" \( ! -user "$(id -u)" -o \( ! -type l -perm /022 \) \) -print -quit)" ]; then
        why="it holds files owned or writable by another user"
    elif [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$want" ]; then
        why="it was made by another python3 or from another $LOCK, or its set-up did not finish"
    elif ! "$VENV/bin/python" -c '' 2>/dev/null; then
        why="its python does not run"
    fi
    if [ -n "$why" ]; then
        echo "setup: re-creating $PWD/$VENV: $why"
        rm -rf "$VENV" || {
            echo "Error: cannot remove $PWD/$VENV; remove it as its owner (e.g. sudo rm -rf $PWD/$VENV) and run again." >&2
            exit 1
        }
    fi
fi
if [ ! -e "$VENV" ]; then
    echo "setup: creating $PWD/$VENV with $(command -v python3) ($(python3 --version 2>&1))"
    python3 -m venv "$VENV"
    # --only-binary: every locked package installs from a hash-checked wheel, so no sdist build
    # can pull unpinned build tools from the index.
    "$VENV/bin/python" -m pip install -q --require-hashes --only-binary :all: -r "$LOCK"
    echo "$want" >"$STAMP"
fi

# --- DPDK 22.11 for the netvsc interop test (optional) ------------------------------------------
# The runtime: the netvsc PMD, the vmbus bus, the ring mempool driver and what they pull in (15
# small librte-* packages and libfdt1 on Debian 12), and libbsd-dev (+ libmd-dev), whose
# <bsd/string.h> the DPDK headers include. Headers: libdpdk-dev depends on every PMD's library
# and many -dev packages, so it is only downloaded (the version the runtime has) and its include/
# tree and pkg-config files unpacked into $DPDK_DEV, which the test compiles against
# (tests/support/dpdk.py). A failure here is a warning: the rest of the suite needs none of it.
DPDK_DEV="$VENV/dpdk"
DPDK_PKGS=(librte-net-netvsc23 librte-bus-vmbus23 librte-mempool-ring23 libbsd-dev)
dpdk_warn() { echo "setup: warning: $1; tests/e2e/test_dpdk_interop.py will skip." >&2; }
installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }
dpdk_setup() {
    command -v apt-get >/dev/null && command -v dpkg-deb >/dev/null || {
        dpdk_warn "no apt-get/dpkg-deb to get DPDK 22.11 with"; return 0; }
    local missing=() p
    for p in "${DPDK_PKGS[@]}"; do installed "$p" || missing+=("$p"); done
    if [ ${#missing[@]} -gt 0 ]; then
        if ! apt-cache show "${missing[@]}" >/dev/null 2>&1; then
            $SUDO apt-get update -qq || true
        fi
        echo "setup: apt-get install ${missing[*]}"
        $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" || {
            dpdk_warn "apt-get could not install ${missing[*]} (DPDK 22.11 is Debian 12's)"; return 0; }
    fi
    local ver
    ver="$(dpkg-query -W -f='${Version}' librte-ethdev23)"
    [ -f "$DPDK_DEV/VERSION" ] && [ "$(cat "$DPDK_DEV/VERSION")" = "$ver" ] && return 0
    echo "setup: unpacking libdpdk-dev $ver (headers, pkg-config) into $PWD/$DPDK_DEV"
    local tmp
    tmp="$(mktemp -d)"
    # As root, apt-get download would drop to the _apt user, who cannot write to a 0700 mktemp dir.
    local sandbox=()
    [ "$(id -u)" -ne 0 ] || sandbox=(-o APT::Sandbox::User=root)
    if ! (cd "$tmp" && apt-get download -qq "${sandbox[@]}" "libdpdk-dev=$ver" >/dev/null); then
        rm -rf "$tmp"; dpdk_warn "apt-get download libdpdk-dev=$ver failed"; return 0
    fi
    mkdir "$tmp/x"
    if ! dpkg-deb --fsys-tarfile "$tmp"/libdpdk-dev_*.deb |
            tar -C "$tmp/x" -x --wildcards './usr/include/*' './usr/lib/*/pkgconfig/*'; then
        rm -rf "$tmp"; dpdk_warn "could not unpack libdpdk-dev"; return 0
    fi
    rm -rf "$DPDK_DEV"
    mkdir -p "$DPDK_DEV"
    mv "$tmp/x/usr/include" "$DPDK_DEV/include"
    mv "$tmp"/x/usr/lib/*/pkgconfig "$DPDK_DEV/pkgconfig"
    echo "$ver" >"$DPDK_DEV/VERSION"
    rm -rf "$tmp"
}
dpdk_setup

# --- hvuio itself --------------------------------------------------------------------------------
# Built from a private copy of the clone's sources (mktemp -d), so the clone gets no build/ or
# *.egg-info and a stale build/ can never leak old files into the package. No build isolation:
# the build uses the pinned setuptools and cffi of the venv; --no-deps --no-index: nothing else is
# fetched. pip check then proves the pinned set satisfies hvuio's requirements.
src="$(mktemp -d)"
trap 'rm -rf "$src"' EXIT
tar -C . -cf - --exclude=./.git --exclude="./$VENV" --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=.hypothesis --exclude=.pytest_cache \
    --exclude=.mypy_cache --exclude=./_native/_out --exclude='*.so' --exclude='./hvuio/_native*.c' . |
    tar -C "$src" -xf -
echo "setup: building and installing hvuio into $PWD/$VENV"
"$VENV/bin/python" -m pip install -q --no-build-isolation --no-deps --no-index --force-reinstall "$src"
"$VENV/bin/python" -m pip check

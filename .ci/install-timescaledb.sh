#!/usr/bin/env bash
# Install the TimescaleDB extension for the machine's (newest) PostgreSQL.
#
# Idempotent: exits immediately when timescaledb.so and its control file are
# already present for that PostgreSQL major version.
#
#  * Debian 13 (trixie): apt-get install postgresql-<major>-timescaledb.
#  * Otherwise (e.g. Debian 12 with PostgreSQL 15, for which Debian ships no
#    timescaledb package): fetch the Debian 13 *source* package (a deb-src
#    entry only -- never a binary "deb" entry, which would upgrade the
#    machine's packages), and build the Apache-2.0 part from the .orig tarball
#    against the local PostgreSQL.  Takes roughly half a minute.
#
# Must run as root (or with sudo available).  Called from .ci/run, but also
# works on its own.
set -euo pipefail

log() { printf '[install-timescaledb] %s\n' "$*"; }
die() { printf '[install-timescaledb] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=""
if [[ ${EUID:-$(id -u)} -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "must run as root (or have sudo)"
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-y -q -o Acquire::Retries=3 -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)

pkg_installed() {
    dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'
}

# Install the given packages that are not installed yet (apt-get update only if needed).
APT_UPDATED=0
apt_ensure() {
    local missing=() p
    for p in "$@"; do
        pkg_installed "$p" || missing+=("$p")
    done
    ((${#missing[@]})) || return 0
    if ((!APT_UPDATED)); then
        $SUDO apt-get update -q -o Acquire::Retries=3
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    $SUDO apt-get install "${APT_OPTS[@]}" --no-install-recommends "${missing[@]}"
}

# Newest installed PostgreSQL major (by /usr/lib/postgresql/<major>/bin/pg_config).
detect_pg_major() {
    local c
    c=$(ls -d /usr/lib/postgresql/*/bin/pg_config 2>/dev/null | sort -V | tail -n1 || true)
    [[ -n $c ]] || return 1
    c=${c#/usr/lib/postgresql/}
    printf '%s\n' "${c%%/*}"
}

PG_MAJOR=${PG_MAJOR:-}
if [[ -z $PG_MAJOR ]]; then
    if ! PG_MAJOR=$(detect_pg_major); then
        log "no PostgreSQL found under /usr/lib/postgresql; installing the distribution's default"
        apt_ensure postgresql
        PG_MAJOR=$(detect_pg_major) || die "PostgreSQL still not found after installing it"
    fi
fi
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
[[ -x $PG_CONFIG ]] || die "$PG_CONFIG not found"

PKGLIBDIR=$("$PG_CONFIG" --pkglibdir)
SHAREDIR=$("$PG_CONFIG" --sharedir)

installed_version() {
    # default_version from the control file, e.g. 2.19.3
    sed -n "s/^default_version *= *'\([^']*\)'.*/\1/p" "$SHAREDIR/extension/timescaledb.control" 2>/dev/null
}

if [[ -f $PKGLIBDIR/timescaledb.so && -f $SHAREDIR/extension/timescaledb.control ]]; then
    log "already installed for PostgreSQL $PG_MAJOR (version $(installed_version)); nothing to do"
    exit 0
fi

# --- Debian 13: packaged ----------------------------------------------------
debian_version=$(cat /etc/debian_version 2>/dev/null || true)
if [[ $debian_version == 13* || $debian_version == trixie* ]]; then
    log "Debian 13 detected: installing postgresql-$PG_MAJOR-timescaledb"
    APT_UPDATED=0 # the package index may be stale; refresh before installing
    apt_ensure "postgresql-$PG_MAJOR-timescaledb"
    [[ -f $PKGLIBDIR/timescaledb.so ]] || die "package installed but $PKGLIBDIR/timescaledb.so is missing"
    log "installed timescaledb $(installed_version) for PostgreSQL $PG_MAJOR"
    exit 0
fi

# --- Otherwise: build from Debian 13's source package -----------------------
log "building TimescaleDB from Debian 13 (trixie) sources for PostgreSQL $PG_MAJOR"
apt_ensure "postgresql-server-dev-$PG_MAJOR" build-essential cmake libssl-dev dpkg-dev xz-utils

# Mirror (and keyring) of the machine's existing Debian entry.
codename=$(. /etc/os-release 2>/dev/null && printf '%s' "${VERSION_CODENAME:-}")
mirror=""
signed_by=""
if [[ -f /etc/apt/sources.list.d/debian.sources ]]; then
    # deb822: pick the stanza whose Suites include the release codename
    # (i.e. the main archive, not -security); else the first non-security one.
    read -r mirror signed_by < <(awk -v cn="$codename" '
        function flush() {
            if (uri != "" && uri !~ /security/) {
                if (best == "" && cn != "" && (" " suites " ") ~ (" " cn " ")) best = uri " " key
                if (first == "") first = uri " " key
            }
            uri = ""; suites = ""; key = ""
        }
        /^[ \t]*$/              { flush(); next }
        /^[ \t]*#/              { next }
        tolower($1) == "uris:"     { uri = $2 }
        tolower($1) == "suites:"   { $1 = ""; suites = $0 }
        tolower($1) == "signed-by:" { key = $2 }
        END { flush(); print (best != "" ? best : first) }
    ' /etc/apt/sources.list.d/debian.sources) || true
fi
if [[ -z $mirror && -f /etc/apt/sources.list ]]; then
    # one-line format: deb [opts] URI suite components...
    mirror=$(awk '$1 == "deb" {
                    i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ }
                    if ($i !~ /security/) { print $i; exit }
                  }' /etc/apt/sources.list) || true
fi
mirror=${mirror:-http://deb.debian.org/debian}
mirror=${mirror%/}
log "using mirror $mirror"

src_file=/etc/apt/sources.list.d/trixie-src.sources
want=$(
    printf 'Types: deb-src\nURIs: %s\nSuites: trixie\nComponents: main\n' "$mirror"
    if [[ -n $signed_by && -e $signed_by ]]; then
        printf 'Signed-By: %s\n' "$signed_by"
    fi
)
if [[ ! -f $src_file ]] || [[ $(cat "$src_file") != "$want" ]]; then
    log "writing $src_file (deb-src only)"
    printf '%s\n' "$want" | $SUDO tee "$src_file" >/dev/null
fi
$SUDO apt-get update -q -o Acquire::Retries=3

workdir=$(mktemp -d /tmp/timescaledb-build.XXXXXX)
trap 'rm -rf "$workdir"' EXIT
# Let apt download as its sandbox user _apt (avoids an "unsandboxed as root" warning).
if [[ -z $SUDO ]] && id _apt >/dev/null 2>&1; then
    chown _apt "$workdir"
fi
cd "$workdir"

apt-get source -q --download-only timescaledb/trixie
orig=$(ls timescaledb_*.orig.tar.* 2>/dev/null | head -n1 || true)
[[ -n $orig ]] || die "no timescaledb .orig tarball downloaded"
log "unpacking $orig"
mkdir src
tar -xf "$orig" -C src --strip-components=1
cd src

[[ -f version.config ]] && log "source $(grep -m1 '^version' version.config)"

./bootstrap \
    -DAPACHE_ONLY=ON \
    -DREGRESS_CHECKS=OFF \
    -DTAP_CHECKS=OFF \
    -DWARNINGS_AS_ERRORS=OFF \
    -DCMAKE_BUILD_TYPE=Release \
    -DPG_CONFIG="$PG_CONFIG"
jobs=$(nproc 2>/dev/null || echo 2)
((jobs >= 2)) || jobs=2
$SUDO make -C build -j"$jobs" install

[[ -f $PKGLIBDIR/timescaledb.so ]] || die "build finished but $PKGLIBDIR/timescaledb.so is missing"
[[ -f $SHAREDIR/extension/timescaledb.control ]] || die "timescaledb.control is missing after install"
log "installed timescaledb $(installed_version) (Apache-2.0 edition) for PostgreSQL $PG_MAJOR"

#!/usr/bin/env bash
# Make the services HazardWatch's tests, demo and benchmarks need reachable on
# this machine, then print how to reach them, one KEY=VALUE line each, on stdout:
#
#   HW_PG_DSN=postgresql://postgres@127.0.0.1:5432/postgres     PostgreSQL (Debian's, 15 on bookworm)
#   HW_TSDB_DSN=postgresql://postgres@127.0.0.1:5433/postgres   PostgreSQL 17 + TimescaleDB 2.x
#   HW_MQTT_URL=mqtt://127.0.0.1:1883                           Mosquitto
#
# It also installs Debian's chromium (and a CJK font) for the console's browser test when
# missing; that prints no line.
#
# Tests and docs parse those lines, so keep their form. Everything else
# (progress, errors) goes to stderr, prefixed "services:".
#
# Idempotent: a service that already answers is left alone, so a run with
# everything up takes well under a second or two. A fresh machine installs
# packages and builds the TimescaleDB chroot (a minute or two, once).
#
# Runs as root (as the developers' machines and CI do). Not being root is only
# supported when nothing has to be installed, started or mounted; otherwise
# the script stops with a message saying what it needed root for.
#
# Environment:
#   HW_SKIP_TSDB=1   skip TimescaleDB entirely (no chroot, no HW_TSDB_DSN line).
#                    For a quick local loop only; CI never sets it.
#   HW_TSDB_ROOT     where the TimescaleDB chroot lives
#                    (default /var/cache/hazardwatch/timescaledb, outside the
#                    checkout so fresh clones and `git clean` reuse it).
#   HW_SERVICES_WAIT seconds to wait for a server to come up (default 60).
set -euo pipefail

readonly HOST=127.0.0.1
readonly PG_PORT=5432
readonly TSDB_PORT=5433
readonly MQTT_PORT=1883
readonly WAIT_SECONDS=${HW_SERVICES_WAIT:-60}
readonly DEBIAN_MIRROR=http://deb.debian.org/debian

# /proc/mounts and /proc/PID/root show resolved paths, so compare against one.
TSDB_ROOT=$(realpath -m "${HW_TSDB_ROOT:-/var/cache/hazardwatch/timescaledb}")
readonly TSDB_ROOT
# Paths inside the chroot.
readonly TSDB_BIN=/usr/lib/postgresql/17/bin
readonly TSDB_DATA=/var/lib/postgresql/hw-tsdb
readonly TSDB_LOG=/var/lib/postgresql/hw-tsdb.log

log() { printf 'services: %s\n' "$*" >&2; }
die() {
    printf 'services: ERROR: %s\n' "$*" >&2
    exit 1
}
need_root() { [[ $EUID -eq 0 ]] || die "$1: needs root to $2 (rerun as root, or do it by hand)"; }

# Start a long-lived daemon without handing it our stdout copy (fd 3) or the
# lock (fd 9): a daemon holding fd 3 would make `$(scripts/services.sh)` wait
# forever, and one holding fd 9 would block every later run on the lock.
spawn() { "$@" </dev/null 3>&- 9>&-; }

# wait_until SECONDS CMD...: poll CMD every half second, false on timeout.
wait_until() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@"; do
        ((SECONDS < deadline)) || return 1
        sleep 0.5
    done
}

apt_updated=0
apt_install() {
    need_root "apt" "install $*"
    if ((apt_updated == 0)); then
        log "apt-get update"
        apt-get update -qq || die "apt-get update failed"
        apt_updated=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" || die "apt-get install $* failed"
}

port_open() { timeout 1 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null; }
# As postgres/postgres: pg_isready's default role and database (root) don't
# exist, and every probe would log a FATAL in the server log.
pg_ready() { pg_isready -q -h "$HOST" -p "$1" -U postgres -d postgres >/dev/null 2>&1; }
psql_at() { # PORT SQL: one query over TCP, unaligned, no password prompt
    psql -X -w -A -t -q -h "$HOST" -p "$1" -U postgres -d postgres -c "$2"
}
is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

# ---------------------------------------------------------------- PostgreSQL

# Debian's default pg_hba asks TCP clients for a password; tests connect as
# postgres over 127.0.0.1 without one.
pg_trust_localhost() {
    local hba=$1
    log "postgresql: setting trust auth for 127.0.0.1 and ::1 in $hba"
    sed -i -E \
        -e 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+127\.0\.0\.1\/32[[:space:]]+).*/\1trust/' \
        -e 's/^(host[[:space:]]+all[[:space:]]+all[[:space:]]+::1\/128[[:space:]]+).*/\1trust/' \
        "$hba"
}

ensure_postgres() {
    command -v pg_lsclusters >/dev/null || apt_install postgresql

    local cluster ver name
    # The cluster configured for 5432 (Debian's first cluster gets it).
    cluster=$(pg_lsclusters -h | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }')
    [[ -n $cluster ]] || die "postgresql: no cluster configured for port $PG_PORT (see pg_lsclusters)"
    read -r ver name <<<"$cluster"
    local hba=/etc/postgresql/$ver/$name/pg_hba.conf

    if pg_ready "$PG_PORT"; then
        log "postgresql: $ver/$name already accepting connections on :$PG_PORT"
    else
        need_root "postgresql" "start cluster $ver/$name"
        log "postgresql: starting cluster $ver/$name"
        # Exit status ignored: "already running" (still recovering) is fine, and
        # real failures show up as the wait below timing out.
        spawn pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start ||
            log "postgresql: pg_ctlcluster start exited $?; waiting anyway"
        wait_until "$WAIT_SECONDS" pg_ready "$PG_PORT" ||
            die "postgresql: not accepting connections on :$PG_PORT after ${WAIT_SECONDS}s;" \
                "see /var/log/postgresql/postgresql-$ver-$name.log"
    fi

    if ! psql_at "$PG_PORT" 'select 1' >/dev/null 2>&1; then
        need_root "postgresql" "allow passwordless login for postgres over 127.0.0.1"
        pg_trust_localhost "$hba"
        pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" reload
        wait_until 10 psql_at "$PG_PORT" 'select 1' >/dev/null 2>&1 ||
            die "postgresql: user postgres cannot log in over $HOST:$PG_PORT without a password ($hba)"
    fi
}

# --------------------------------------------------------------- TimescaleDB
# Debian 12 packages no TimescaleDB; Debian 13 (trixie) has
# postgresql-17-timescaledb. So a minimal trixie chroot runs its own
# PostgreSQL 17 on 5433, reachable from the host over TCP like any server.

tsdb_root_complete() {
    [[ -x $TSDB_ROOT$TSDB_BIN/postgres && -f $TSDB_ROOT/usr/share/postgresql/17/extension/timescaledb.control ]]
}

# Unmount whatever a killed debootstrap left mounted under $1 (its proc,
# sys, ...) so that removing the tree cannot reach into the host's.
unmount_under() {
    local m
    awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
        umount -l "$m" || true
    done
}

tsdb_bootstrap() {
    if [[ -e $TSDB_ROOT ]]; then
        # Only ever created by the rename below, so it should be complete;
        # don't guess about deleting a tree somebody else may have put there.
        die "timescaledb: $TSDB_ROOT exists but has no PostgreSQL 17 + TimescaleDB; remove it and rerun"
    fi
    need_root "timescaledb" "debootstrap a Debian trixie chroot into $TSDB_ROOT"
    command -v debootstrap >/dev/null || apt_install debootstrap

    # Bootstrap into ROOT.tmp and rename on success: a run killed halfway
    # leaves only ROOT.tmp, which the next run throws away.
    local tmp=$TSDB_ROOT.tmp blog=$TSDB_ROOT.debootstrap.log
    if [[ -e $tmp ]]; then
        log "timescaledb: removing unfinished $tmp"
        unmount_under "$tmp"
        rm -rf --one-file-system "$tmp"
    fi
    mkdir -p "$(dirname "$TSDB_ROOT")"
    log "timescaledb: debootstrapping Debian trixie + postgresql-17-timescaledb into $TSDB_ROOT" \
        "(first run only, about a minute; log: $blog)"
    if ! spawn debootstrap --variant=minbase --include=postgresql-17,postgresql-17-timescaledb \
        trixie "$tmp" "$DEBIAN_MIRROR" >"$blog" 2>&1; then
        tail -n 20 "$blog" >&2
        unmount_under "$tmp"
        die "timescaledb: debootstrap failed (full log: $blog; details in $tmp/debootstrap/debootstrap.log)"
    fi
    unmount_under "$tmp"
    mv -T "$tmp" "$TSDB_ROOT"
    tsdb_root_complete || die "timescaledb: debootstrap finished but $TSDB_ROOT lacks PostgreSQL 17 or TimescaleDB"
}

# PostgreSQL in the chroot needs /proc, and /dev/shm for its POSIX shared
# memory. Mounts outlive the script (and a session), hence the check.
tsdb_mounts() {
    if ! is_mounted "$TSDB_ROOT/proc"; then
        need_root "timescaledb" "mount proc in the chroot"
        mount -t proc proc "$TSDB_ROOT/proc"
    fi
    if ! is_mounted "$TSDB_ROOT/dev/shm"; then
        need_root "timescaledb" "mount /dev/shm in the chroot"
        mkdir -p "$TSDB_ROOT/dev/shm"
        mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs "$TSDB_ROOT/dev/shm"
    fi
}

# Run a command in the chroot as its postgres user, with a clean environment so
# nothing of the caller's leaks in (PG* variables; LANG/LC_* naming locales the
# chroot lacks, which makes initdb pick or refuse odd locales). C.UTF-8 is
# built into glibc, so it always exists.
tsdb_as_postgres() {
    local ids
    ids=$(awk -F: '$1 == "postgres" { print $3 ":" $4 }' "$TSDB_ROOT/etc/passwd")
    [[ -n $ids ]] || die "timescaledb: no postgres user in $TSDB_ROOT/etc/passwd"
    chroot --userspec="$ids" --groups="${ids#*:}" "$TSDB_ROOT" \
        /usr/bin/env -i LANG=C.UTF-8 LC_ALL=C.UTF-8 HOME=/var/lib/postgresql \
        PATH="$TSDB_BIN:/usr/bin:/bin" "$@"
}

# Our postmaster, i.e. a live postgres process chrooted into TSDB_ROOT. A bare
# pid is not enough: after a machine restart the pid in postmaster.pid may
# belong to anything, even the host's PostgreSQL.
tsdb_pid_is_ours() {
    local pid=$1
    [[ $pid =~ ^[0-9]+$ && -d /proc/$pid ]] || return 1
    [[ $(awk '$1 == "State:" { print $2 }' "/proc/$pid/status" 2>/dev/null) != Z ]] || return 1
    [[ $(cat "/proc/$pid/comm" 2>/dev/null) == postgres ]] || return 1
    [[ $(readlink "/proc/$pid/root" 2>/dev/null) == "$TSDB_ROOT" ]]
}

tsdb_start() {
    need_root "timescaledb" "start the server in the chroot"
    tsdb_mounts

    if [[ ! -f $TSDB_ROOT$TSDB_DATA/PG_VERSION ]]; then
        # initdb into a side directory and rename, so a half-initialised
        # cluster is never started.
        log "timescaledb: initdb $TSDB_DATA (in the chroot)"
        rm -rf "$TSDB_ROOT$TSDB_DATA.tmp"
        tsdb_as_postgres initdb -D "$TSDB_DATA.tmp" -A trust -U postgres -E UTF8 --locale=C.UTF-8 >/dev/null ||
            die "timescaledb: initdb failed"
        mv -T "$TSDB_ROOT$TSDB_DATA.tmp" "$TSDB_ROOT$TSDB_DATA"
    fi

    local pidfile=$TSDB_ROOT$TSDB_DATA/postmaster.pid pid
    if [[ -f $pidfile ]]; then
        pid=$(head -n 1 "$pidfile")
        if tsdb_pid_is_ours "$pid"; then
            log "timescaledb: server (pid $pid) is running but not answering yet; waiting"
            wait_until "$WAIT_SECONDS" pg_ready "$TSDB_PORT" ||
                die "timescaledb: server pid $pid never accepted connections on :$TSDB_PORT;" \
                    "see $TSDB_ROOT$TSDB_LOG"
            return
        fi
        log "timescaledb: removing stale postmaster.pid (pid $pid is not our postgres)"
        rm -f "$pidfile"
    fi
    # The socket's lock file names the old pid too, and postgres refuses to
    # start while that pid exists, which includes a killed postmaster that is
    # still an unreaped zombie. Nothing else uses the chroot's /tmp.
    rm -f "$TSDB_ROOT/tmp/.s.PGSQL.$TSDB_PORT" "$TSDB_ROOT/tmp/.s.PGSQL.$TSDB_PORT.lock"

    log "timescaledb: starting PostgreSQL 17 + TimescaleDB on :$TSDB_PORT"
    # Sockets go in the chroot's own /tmp, which only pg_ctl's readiness check
    # uses; the host connects over TCP, so nothing depends on /run in the chroot.
    if ! spawn tsdb_as_postgres pg_ctl -D "$TSDB_DATA" -l "$TSDB_LOG" -w -t "$WAIT_SECONDS" \
        -o "-p $TSDB_PORT -c listen_addresses=$HOST -c shared_preload_libraries=timescaledb \
-c timescaledb.telemetry_level=off -c unix_socket_directories=/tmp" start >&2; then
        tail -n 20 "$TSDB_ROOT$TSDB_LOG" >&2 || true
        die "timescaledb: server did not start (log: $TSDB_ROOT$TSDB_LOG)"
    fi
    wait_until "$WAIT_SECONDS" pg_ready "$TSDB_PORT" ||
        die "timescaledb: started but :$TSDB_PORT does not accept connections; see $TSDB_ROOT$TSDB_LOG"
}

ensure_tsdb() {
    if pg_ready "$TSDB_PORT"; then
        log "timescaledb: already accepting connections on :$TSDB_PORT"
    else
        tsdb_root_complete || tsdb_bootstrap
        tsdb_start
    fi

    # Only check the extension is installable: tests create their own
    # databases and the extension in them; the postgres database stays clean.
    local version
    version=$(psql_at "$TSDB_PORT" \
        "select default_version from pg_available_extensions where name = 'timescaledb'" 2>&1) ||
        die "timescaledb: cannot query $HOST:$TSDB_PORT: $version"
    [[ $version == 2.* ]] ||
        die "timescaledb: server on :$TSDB_PORT offers no timescaledb 2.x extension (got '${version}')"
    log "timescaledb: extension $version available on :$TSDB_PORT"
}

# ------------------------------------------------------------------ Mosquitto

ensure_mosquitto() {
    if port_open "$MQTT_PORT"; then
        log "mosquitto: already listening on :$MQTT_PORT"
        return
    fi
    command -v mosquitto >/dev/null || apt_install mosquitto mosquitto-clients
    # Installing may have started it through its init script.
    port_open "$MQTT_PORT" && return

    need_root "mosquitto" "start the broker"
    # /run is a tmpfs, so after a machine restart the pid file's directory is
    # gone and mosquitto refuses to start without it.
    if id mosquitto >/dev/null 2>&1; then
        install -d -o mosquitto -g mosquitto /run/mosquitto /var/log/mosquitto
    fi
    log "mosquitto: starting"
    spawn mosquitto -d -c /etc/mosquitto/mosquitto.conf ||
        die "mosquitto: failed to start; see /var/log/mosquitto/mosquitto.log"
    wait_until "$WAIT_SECONDS" port_open "$MQTT_PORT" ||
        die "mosquitto: not listening on $HOST:$MQTT_PORT after ${WAIT_SECONDS}s; see /var/log/mosquitto/mosquitto.log"
}

# ------------------------------------------------------------------- Chromium
# The console's browser test drives Debian's chromium through Playwright (its own browser
# download is not reachable here); a CJK font so that the Chinese interface renders (and the
# screenshots in docs/img/ show text, not boxes).

ensure_chromium() {
    local missing=()
    [[ -x /usr/bin/chromium ]] || missing+=(chromium)
    [[ -f /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ]] || missing+=(fonts-wqy-microhei)
    if ((${#missing[@]})); then
        apt_install "${missing[@]}"
    else
        log "chromium: /usr/bin/chromium and a CJK font already installed"
    fi
}

# ----------------------------------------------------------------------- main

main() {
    # Keep stdout for the DSN lines only: fd 3 is the real stdout, and every
    # other command's output goes to stderr.
    exec 3>&1 1>&2

    # Two runs at once (a developer and a test, say) would race on debootstrap
    # and pg_ctl; the second waits for the first, which makes it a quick check.
    exec 9>"${TMPDIR:-/tmp}/hazardwatch-services.lock"
    flock -w 900 9 || die "another scripts/services.sh still holds ${TMPDIR:-/tmp}/hazardwatch-services.lock"

    ensure_postgres
    if [[ ${HW_SKIP_TSDB:-0} == 1 ]]; then
        log "timescaledb: skipped (HW_SKIP_TSDB=1)"
    else
        ensure_tsdb
    fi
    ensure_mosquitto
    ensure_chromium

    echo "HW_PG_DSN=postgresql://postgres@$HOST:$PG_PORT/postgres" >&3
    if [[ ${HW_SKIP_TSDB:-0} != 1 ]]; then
        echo "HW_TSDB_DSN=postgresql://postgres@$HOST:$TSDB_PORT/postgres" >&3
    fi
    echo "HW_MQTT_URL=mqtt://$HOST:$MQTT_PORT" >&3
}

main "$@"

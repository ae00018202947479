#!/usr/bin/env bash
# Builds the release binaries into ./bin, or runs the whole test suite.
#
#   ./autobuild.sh          build bin/ChatServer, bin/ChatClient, bin/ConsistentHash
#   ./autobuild.sh test     build, then run every test (unit, integration, doc): once on
#                           SQLite, then the integration suite again on MySQL (MariaDB)
#   ./autobuild.sh cluster up|down|status
#                           build (for `up`), then a local cluster: MariaDB, Redis, two
#                           ChatServers and nginx on 8000 (scripts/cluster.sh)
#
# The integration suite starts private MariaDB, Redis and nginx (stream) servers of its
# own, in temp dirs on free loopback ports (tests/it/support/services.rs): it needs their
# programs, not running services. `test` installs them when missing (as root, with
# apt-get), and otherwise says what to install and fails.
set -euo pipefail
cd "$(dirname "$0")"

BINS=(ChatServer ChatClient ConsistentHash)

build() {
    cargo build --release --locked --bins
    mkdir -p bin
    local out="${CARGO_TARGET_DIR:-target}/release"
    for b in "${BINS[@]}"; do
        if [ -f "$out/$b" ]; then
            cp -f "$out/$b" bin/
        fi
    done
    echo "built: $(cd bin && ls | tr '\n' ' ')"
}

# find_bin NAME...: the first of the named programs on PATH or in the sbin directories.
source scripts/find_bin.sh

# Whether nginx is there with its stream module, built in or as a loadable module.
has_nginx_stream() {
    local nginx flags dir
    nginx=$(find_bin nginx) || return 1
    flags=" $("$nginx" -V 2>&1 | tr '\n' ' ') "
    case "$flags" in
        *" --with-stream "*) return 0 ;;
        *" --with-stream=dynamic "*) ;;
        *) return 1 ;;
    esac
    for dir in $(echo "$flags" | tr ' ' '\n' | sed -n 's/^--modules-path=//p') \
        /usr/lib/nginx/modules /usr/lib64/nginx/modules /usr/share/nginx/modules /usr/local/nginx/modules; do
        [ -f "$dir/ngx_stream_module.so" ] && return 0
    done
    return 1
}

# What the test services lack, one item a line; nothing when all is there.
missing_services() {
    find_bin mariadbd mysqld >/dev/null || echo "mariadbd (package mariadb-server)"
    find_bin mariadb-install-db mysql_install_db >/dev/null || echo "mariadb-install-db (package mariadb-server)"
    find_bin redis-server >/dev/null || echo "redis-server (package redis-server)"
    has_nginx_stream || echo "nginx with its stream module (packages nginx-light libnginx-mod-stream)"
}

service_running() {
    command -v service >/dev/null 2>&1 && service "$1" status >/dev/null 2>&1
}

# Installs the test services' programs with apt-get, without leaving system services
# running: the tests start private servers and need none.
install_services() {
    local nginx_pkg=nginx-light policy=/usr/sbin/policy-rc.d made_policy="" rc=0 svc
    local services=(mariadb redis-server nginx) was_running=()
    for svc in "${services[@]}"; do
        if service_running "$svc"; then was_running+=("$svc"); fi
    done
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start their services (invoke-rc.d and deb-systemd-invoke ask
    # policy-rc.d); an existing policy is left as it is.
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 755 "$policy" && made_policy=1
    fi
    apt-get update -q || rc=$?
    if [ "$rc" -eq 0 ]; then
        apt-cache show nginx-light >/dev/null 2>&1 || nginx_pkg=nginx
        apt-get install -y -q --no-install-recommends mariadb-server redis-server "$nginx_pkg" libnginx-mod-stream \
            || rc=$?
    fi
    if [ -n "$made_policy" ]; then rm -f "$policy"; fi
    # Should a service have started anyway, stop it, unless it ran before.
    for svc in "${services[@]}"; do
        if service_running "$svc" && [[ " ${was_running[*]} " != *" $svc "* ]]; then
            echo "stopping the $svc system service that the install started"
            service "$svc" stop || true
        fi
    done
    return "$rc"
}

# Makes sure the programs the test services need are there, or fails saying which.
ensure_services() {
    local missing
    missing=$(missing_services)
    [ -z "$missing" ] && return 0
    echo "the integration tests need:"
    echo "$missing" | sed 's/^/  - /'
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing them with apt-get"
        install_services || true
        missing=$(missing_services)
        [ -z "$missing" ] && return 0
    fi
    {
        echo "error: still missing:"
        echo "$missing" | sed 's/^/  - /'
        echo "install them (Debian/Ubuntu, as root):"
        echo "  apt-get install mariadb-server redis-server nginx-light libnginx-mod-stream"
    } >&2
    exit 1
}

run_tests() {
    ensure_services
    # The suite opens a thousand sockets per side in one test.
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    # Release profile: the same build as ./bin, so CI compiles the dependencies once.
    # `test-hooks` (off in ./bin) lets tests make the server panic on purpose; every run
    # below has it, so the ChatServer under test is the same build each time.
    cargo test --release --locked --features test-hooks --all-targets
    cargo test --release --locked --features test-hooks --doc
    # The integration suite again with every server on MySQL (a fresh database each, on
    # the suite's private MariaDB). Skipped: what already ran against both backends
    # (store::, both store suites), against MariaDB directly (mysql::), and the
    # harness's own tests (support::).
    CHAT_TEST_STORE=mysql cargo test --release --locked --features test-hooks --test it -- --skip store:: --skip mysql:: --skip support:: --skip cluster::
    # The protocol suite across a two-node cluster (MariaDB + Redis; clients alternate
    # between the nodes, so conversations cross servers), then with every client
    # going through nginx's stream module in front of the nodes.
    # (The kill tests start their own single server or cluster: not again here.)
    CHAT_TEST_TOPOLOGY=cluster cargo test --release --locked --features test-hooks --test it -- \
        protocol:: framing:: messages:: --skip messages::nothing_acknowledged
    CHAT_TEST_TOPOLOGY=nginx cargo test --release --locked --features test-hooks --test it -- \
        protocol:: framing:: client:: messages:: --skip messages::nothing_acknowledged
}

case "${1:-build}" in
    build) build ;;
    # Not `build && run_tests`: that would switch off `set -e` inside build.
    test) build; run_tests ;;
    # A local cluster under ./run (scripts/cluster.sh): `up` builds first; `down` and
    # `status` need no build, and must work while the tree does not compile.
    cluster)
        if [ "${2:-}" = up ]; then build; fi
        scripts/cluster.sh "${@:2}"
        ;;
    *) echo "usage: $0 [test | cluster up|down|status]" >&2; exit 2 ;;
esac

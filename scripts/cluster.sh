#!/usr/bin/env bash
# A local cluster for development: one MariaDB, one Redis, ChatServers on 6000 and 6002
# sharing them, and nginx (stream) on 8000 in front, the C++ seeds' layout.
#
#   scripts/cluster.sh up       start what is not running yet, wait until all is ready
#   scripts/cluster.sh down     stop what `up` started (by its PID files), nothing else
#   scripts/cluster.sh status   each process: pid, and whether it runs
#
# (`./autobuild.sh cluster up` builds ./bin first.) Everything lives under run/ in the
# repository: run/NAME.pid and run/NAME.log for each process, MariaDB's datadir and
# socket in run/mariadb/, Redis's dir in run/redis/, the generated nginx.conf in
# run/nginx/. The database survives `down`; `rm -rf run/mariadb` (when down) resets it.
#
# Settings (environment):
#   CLUSTER_NGINX        round-robin (default), consistent-hash, least-conn: which
#                        nginx/NAME.conf; or a path to a config of the same shape. The
#                        ChatServers are those of its upstream (127.0.0.1:PORT lines),
#                        and nginx listens where its `listen` says.
#   CLUSTER_DB_PORT      MariaDB's port, default 3307
#   CLUSTER_REDIS_PORT   Redis's port, default 6379
#   CLUSTER_SERVER_BIN   the ChatServer binary, default bin/ChatServer
#   CLUSTER_SERVER_ARGS  more ChatServer flags, e.g. "--threads 2 --idle-timeout 600"
#   RUST_LOG             passed on to the ChatServers (env_logger)
#
# Ports are fixed: one that is taken fails `up` before anything starts, saying which.
# Linux: liveness and ownership of a PID are read from /proc.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
RUN="$ROOT/run"

DB_PORT=${CLUSTER_DB_PORT:-3307}
REDIS_PORT=${CLUSTER_REDIS_PORT:-6379}
SERVER_BIN=${CLUSTER_SERVER_BIN:-$ROOT/bin/ChatServer}
DB_NAME=chat
DB_USER=chat
DB_PASSWORD=chat-cluster
DB_URL="mysql://$DB_USER:$DB_PASSWORD@127.0.0.1:$DB_PORT/$DB_NAME"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT"

# Seconds a process may take to be ready after it was started, and to exit after
# SIGTERM before it gets SIGKILL.
START_WAIT=60
STOP_WAIT=30

# Small and fast, as the test suite's MariaDB (tests/it/support/services.rs): a
# developer's throwaway server, not durable against power loss.
MARIADB_SMALL=(
    --skip-name-resolve
    --skip-log-bin
    --innodb-buffer-pool-size=16M
    --innodb-log-file-size=8M
    --innodb-flush-log-at-trx-commit=2
    --innodb-doublewrite=0
    --innodb-use-native-aio=0
    --performance-schema=OFF
)

INSTALL_HINT="Debian/Ubuntu: apt-get install mariadb-server redis-server nginx-light libnginx-mod-stream"

say() { printf '%s\n' "$*"; }
warn() { printf 'cluster: %s\n' "$*" >&2; }
die() {
    warn "$*"
    exit 1
}

rel() { printf '%s' "${1#"$ROOT"/}"; }

# ---------------------------------------------------------------------------------
# Programs.

# find_bin NAME...: the first of the named programs on PATH or in the sbin directories.
source "$ROOT/scripts/find_bin.sh"

need_bin() {
    local what=$1
    shift
    find_bin "$@" || die "$what not found ($*); $INSTALL_HINT"
}

# `load_module PATH;` when nginx has the stream module as a dynamic module, nothing when
# it is built in; fails when it has neither.
stream_module_directive() {
    local nginx=$1 flags dir
    flags=" $("$nginx" -V 2>&1 | tr '\n' ' ') "
    case "$flags" in
        *" --with-stream "*) return 0 ;;
        *" --with-stream=dynamic "*) ;;
        *) die "$nginx has no stream module; $INSTALL_HINT" ;;
    esac
    for dir in $(say "$flags" | tr ' ' '\n' | sed -n 's/^--modules-path=//p') \
        /usr/lib/nginx/modules /usr/lib64/nginx/modules /usr/share/nginx/modules /usr/local/nginx/modules; do
        if [ -f "$dir/ngx_stream_module.so" ]; then
            say "load_module \"$dir/ngx_stream_module.so\";"
            return 0
        fi
    done
    die "ngx_stream_module.so not found (package libnginx-mod-stream); $INSTALL_HINT"
}

# ---------------------------------------------------------------------------------
# The nginx config, and the ports it names.

nginx_conf_file() {
    local choice=${CLUSTER_NGINX:-round-robin}
    case "$choice" in
        */*) say "$(cd "$(dirname "$choice")" && pwd)/$(basename "$choice")" ;;
        *) say "$ROOT/nginx/${choice%.conf}.conf" ;;
    esac
}

# The config `up` starts nginx with; while nginx runs, the one it runs with (see
# read_layout).
NGINX_CONF=$(nginx_conf_file)
REQUESTED_CONF=$NGINX_CONF

# The port of the config's `listen` (`listen 8000;` or `listen 127.0.0.1:8000;`).
lb_port() {
    sed -n 's/^[[:space:]]*listen[[:space:]]\{1,\}\([^;[:space:]]*:\)\{0,1\}\([0-9]\{1,\}\)[[:space:];].*/\2/p' \
        "$NGINX_CONF" | head -n 1
}

# The ports of the config's upstream servers on 127.0.0.1, one a line.
node_ports() {
    sed -n 's/^[[:space:]]*server[[:space:]]\{1,\}127\.0\.0\.1:\([0-9]\{1,\}\)[[:space:];].*/\1/p' "$NGINX_CONF"
}

# The nginx config the running nginx was started with (its name), if any.
running_nginx_conf() {
    sed -n 's|^[[:space:]]*include[[:space:]]*"\(.*\)";.*|\1|p' "$RUN/nginx/nginx.conf" 2>/dev/null | head -n 1
}

conf_name() {
    case "$1" in
        "$ROOT"/nginx/*.conf) basename "$1" .conf ;;
        *) say "$1" ;;
    esac
}

# ---------------------------------------------------------------------------------
# The processes: NAME is mariadb, redis, chatserver-PORT or nginx; each has
# run/NAME.pid and run/NAME.log.

pid_file() { say "$RUN/$1.pid"; }
log_file() { say "$RUN/$1.log"; }

# Whether PID is the process `up` started as NAME: it is alive (not a zombie) and its
# stdout is still run/NAME.log, where `up` pointed it. A PID reused by another program
# fails this, so `down` never signals anything else.
is_ours() {
    local pid=$1 name=$2 log out state
    log=$(log_file "$name")
    [ -n "$pid" ] && [ "$pid" -gt 1 ] 2>/dev/null || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -d "/proc/$pid" ]; then
        state=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
        [ "$state" != Z ] && [ "$state" != X ] || return 1
        out=$(readlink "/proc/$pid/fd/1" 2>/dev/null || true)
        [ "$out" = "$log" ] || [ "$out" = "$log (deleted)" ]
    else
        # No /proc: at least the program must be the expected one.
        local comm
        comm=$(ps -p "$pid" -o comm= 2>/dev/null || true)
        case "$name:$comm" in
            mariadb:*mariadbd* | mariadb:*mysqld* | redis:*redis* | nginx:*nginx* | chatserver-*:*ChatServer*) return 0 ;;
            *) return 1 ;;
        esac
    fi
}

# The PID of NAME if it runs; fails (and removes a stale PID file) if not.
running_pid() {
    local name=$1 file pid
    file=$(pid_file "$name")
    [ -f "$file" ] || return 1
    pid=$(head -n 1 "$file" 2>/dev/null || true)
    if is_ours "$pid" "$name"; then
        say "$pid"
        return 0
    fi
    # Only `up` and `down` (under the lock) tidy up; `status` just reports.
    if [ -n "${TIDY:-}" ]; then rm -f "$file"; fi
    return 1
}

# Starts NAME in the background, in a session of its own (a closed terminal or a
# Ctrl-C later does not reach it), stdin from /dev/null, output appended to its log,
# and without fd 9 (the lock, which must not outlive this script).
launch() {
    local name=$1 log pid
    shift
    log=$(log_file "$name")
    printf '\n==== %s: %s\n' "$(date '+%F %T')" "$*" >>"$log"
    if command -v setsid >/dev/null 2>&1; then
        # Not a process group leader (no job control here), so setsid execs in place
        # and $! is the program's own PID.
        setsid "$@" </dev/null >>"$log" 2>&1 9>&- &
    else
        nohup "$@" </dev/null >>"$log" 2>&1 9>&- &
    fi
    pid=$!
    say "$pid" >"$(pid_file "$name")"
    STARTED+=("$name")
}

tail_log() {
    local log
    log=$(log_file "$1")
    [ -f "$log" ] || return 0
    warn "last lines of $(rel "$log"):"
    # This start's part only: from the last "==== " line that launch wrote.
    awk '/^==== / { n = 0 } { lines[n++] = $0 } END { for (i = (n > 25 ? n - 25 : 0); i < n; i++) print lines[i] }' \
        "$log" | sed 's/^/    /' >&2
}

# Waits until `CHECK ARGS...` succeeds for NAME; on a process that exits or a time out,
# says so with its log and fails.
wait_ready() {
    local name=$1 pid deadline
    shift
    pid=$(head -n 1 "$(pid_file "$name")")
    deadline=$((SECONDS + START_WAIT))
    until "$@"; do
        if ! is_ours "$pid" "$name"; then
            warn "$name (pid $pid) exited before it was ready"
            tail_log "$name"
            return 1
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            warn "$name (pid $pid) was not ready within ${START_WAIT}s"
            tail_log "$name"
            return 1
        fi
        sleep 0.2
    done
}

# SIGTERM to each running NAME, then SIGKILL to those still there after STOP_WAIT.
stop_all() {
    local name pid pids=() names=() deadline i alive
    for name in "$@"; do
        if pid=$(running_pid "$name"); then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
    done
    [ "${#pids[@]}" -gt 0 ] || return 0
    deadline=$((SECONDS + STOP_WAIT))
    while :; do
        alive=0
        for i in "${!pids[@]}"; do
            if is_ours "${pids[$i]}" "${names[$i]}"; then alive=1; fi
        done
        [ "$alive" = 1 ] || break
        if [ "$SECONDS" -ge "$deadline" ]; then
            for i in "${!pids[@]}"; do
                if is_ours "${pids[$i]}" "${names[$i]}"; then
                    warn "${names[$i]} (pid ${pids[$i]}) ignored SIGTERM for ${STOP_WAIT}s; SIGKILL"
                    kill -KILL "${pids[$i]}" 2>/dev/null || true
                fi
            done
            sleep 0.5
            break
        fi
        sleep 0.2
    done
    for i in "${!pids[@]}"; do
        if is_ours "${pids[$i]}" "${names[$i]}"; then
            warn "${names[$i]} (pid ${pids[$i]}) is still there"
        else
            rm -f "$(pid_file "${names[$i]}")"
            say "stopped ${names[$i]} (pid ${pids[$i]})"
        fi
    done
}

# ---------------------------------------------------------------------------------
# Readiness checks, over TCP with bash's /dev/tcp.

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Sends LINE to 127.0.0.1:PORT and checks that the first line back contains WANT.
tcp_ask() {
    local port=$1 line=$2 want=$3 reply
    (
        exec 3<>"/dev/tcp/127.0.0.1/$port" || exit 1
        printf '%s\r\n' "$line" >&3
        IFS= read -r -t 3 reply <&3 || exit 1
        [[ "$reply" == *"$want"* ]]
    ) 2>/dev/null
}

redis_ready() { tcp_ask "$REDIS_PORT" PING +PONG; }

# A chat server answers PING (msgid 16) with PONG (msgid 17), logged in or not.
chat_ready() { tcp_ask "$1" '{"msgid":16}' '"msgid":17'; }

mariadb_ready() {
    local client
    if client=$(find_bin mariadb mysql); then
        MYSQL_PWD=$DB_PASSWORD "$client" --no-defaults --protocol=TCP -h 127.0.0.1 -P "$DB_PORT" \
            -u "$DB_USER" --connect-timeout=2 -e 'SELECT 1' "$DB_NAME" >/dev/null 2>&1
    else
        port_open "$DB_PORT"
    fi
}

# Who listens on PORT, for the message about a taken port.
port_owner() {
    command -v ss >/dev/null 2>&1 || return 0
    ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:((\(.*\)))/\1/p' | head -n 1
}

# ---------------------------------------------------------------------------------
# The commands.

lock() {
    mkdir -p "$RUN"
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$RUN/.cluster.lock"
        flock -n 9 || die "another scripts/cluster.sh is running on $(rel "$RUN")"
    fi
}

NODE_PORTS=()
LB_PORT=""

# The ports, from the config nginx runs with, or else from the one `up` would use.
read_layout() {
    local current
    if running_pid nginx >/dev/null; then
        current=$(running_nginx_conf)
        if [ -n "$current" ] && [ -f "$current" ]; then NGINX_CONF=$current; fi
    fi
    [ -f "$NGINX_CONF" ] || die "no nginx config $NGINX_CONF (CLUSTER_NGINX: round-robin, consistent-hash, least-conn, or a path)"
    LB_PORT=$(lb_port)
    mapfile -t NODE_PORTS < <(node_ports)
    [ -n "$LB_PORT" ] || die "$(rel "$NGINX_CONF") has no 'listen PORT;' line"
    [ "${#NODE_PORTS[@]}" -gt 0 ] || die "$(rel "$NGINX_CONF") has no 'server 127.0.0.1:PORT ...;' line"
}

# Every process of the cluster, in start order.
all_names() {
    local port
    say mariadb
    say redis
    for port in "${NODE_PORTS[@]}"; do say "chatserver-$port"; done
    say nginx
}

describe() {
    local port
    case "$1" in
        mariadb) say "MariaDB     127.0.0.1:$DB_PORT" ;;
        redis) say "Redis       127.0.0.1:$REDIS_PORT" ;;
        nginx) say "nginx       127.0.0.1:$LB_PORT" ;;
        chatserver-*)
            port=${1#chatserver-}
            say "ChatServer  127.0.0.1:$port"
            ;;
    esac
}

port_of() {
    case "$1" in
        mariadb) say "$DB_PORT" ;;
        redis) say "$REDIS_PORT" ;;
        nginx) say "$LB_PORT" ;;
        chatserver-*) say "${1#chatserver-}" ;;
    esac
}

STARTED=()

# Stops what this `up` started, after a failure or an interrupt.
roll_back() {
    trap - INT TERM
    if [ "${#STARTED[@]}" -gt 0 ]; then
        local i names=()
        for ((i = ${#STARTED[@]} - 1; i >= 0; i--)); do names+=("${STARTED[$i]}"); done
        warn "stopping what this run started: ${names[*]}"
        stop_all "${names[@]}" >&2
    fi
    warn "up failed; logs are in $(rel "$RUN")/"
    exit 1
}

# The programs `up` needs for NAMES, found before anything starts.
MARIADBD="" INSTALL_DB="" REDIS_SERVER="" NGINX_BIN="" NGINX_LOAD=""
find_programs() {
    local names=" $* "
    if [[ "$names" == *" mariadb "* ]]; then
        MARIADBD=$(need_bin mariadbd mariadbd mysqld) || exit 1
        INSTALL_DB=$(need_bin mariadb-install-db mariadb-install-db mysql_install_db) || exit 1
    fi
    if [[ "$names" == *" redis "* ]]; then
        REDIS_SERVER=$(need_bin redis-server redis-server) || exit 1
    fi
    if [[ "$names" == *" nginx "* ]]; then
        NGINX_BIN=$(need_bin nginx nginx) || exit 1
        NGINX_LOAD=$(stream_module_directive "$NGINX_BIN") || exit 1
    fi
    if [[ "$names" == *" chatserver-"* ]] && [ ! -x "$SERVER_BIN" ]; then
        die "no ChatServer binary at $SERVER_BIN: build it first (./autobuild.sh)"
    fi
}

start_mariadb() {
    local dir="$RUN/mariadb" as_user=()
    # mariadbd refuses to run as root unless told to; a non-root user runs it as itself.
    if [ "$(id -u)" = 0 ]; then as_user=(--user="$(id -un)"); fi
    mkdir -p "$dir/tmp"
    if [ ! -d "$dir/data/mysql" ]; then
        say "installing a MariaDB datadir in $(rel "$dir/data")"
        rm -rf "$dir/data"
        if ! "$INSTALL_DB" --no-defaults "${as_user[@]}" --datadir="$dir/data" \
            --auth-root-authentication-method=normal --skip-test-db "${MARIADB_SMALL[@]}" \
            </dev/null >"$RUN/mariadb-install.log" 2>&1; then
            warn "mariadb-install-db failed; $(rel "$RUN/mariadb-install.log"):"
            tail -n 25 "$RUN/mariadb-install.log" | sed 's/^/    /' >&2
            rm -rf "$dir/data"
            return 1
        fi
    fi
    # Run at every start: the database and the account the ChatServers use.
    cat >"$dir/init.sql" <<EOF
CREATE DATABASE IF NOT EXISTS $DB_NAME CHARACTER SET utf8mb4 COLLATE utf8mb4_nopad_bin;
CREATE USER IF NOT EXISTS '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
ALTER USER '$DB_USER'@'127.0.0.1' IDENTIFIED BY '$DB_PASSWORD';
GRANT ALL PRIVILEGES ON $DB_NAME.* TO '$DB_USER'@'127.0.0.1';
EOF
    # --no-defaults first: no /etc/mysql config is read.
    launch mariadb "$MARIADBD" --no-defaults "${as_user[@]}" \
        --datadir="$dir/data" \
        --port="$DB_PORT" \
        --bind-address=127.0.0.1 \
        --socket="$dir/mysql.sock" \
        --pid-file="$dir/mariadbd.pid" \
        --log-error="$(log_file mariadb)" \
        --tmpdir="$dir/tmp" \
        --init-file="$dir/init.sql" \
        "${MARIADB_SMALL[@]}" \
        --max-connections=1000
    wait_ready mariadb mariadb_ready
}

start_redis() {
    mkdir -p "$RUN/redis"
    # No persistence: the bus holds no state worth keeping. --logfile "": stdout, which
    # is run/redis.log.
    launch redis "$REDIS_SERVER" --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no \
        --daemonize no --dir "$RUN/redis" --logfile ""
    wait_ready redis redis_ready
}

start_node() {
    local port=$1 extra=()
    # shellcheck disable=SC2206 # word splitting intended: a list of flags
    extra=(${CLUSTER_SERVER_ARGS:-})
    launch "chatserver-$port" "$SERVER_BIN" 127.0.0.1 "$port" --db "$DB_URL" --redis "$REDIS_URL" "${extra[@]}"
}

start_nginx() {
    local nginx=$NGINX_BIN dir="$RUN/nginx" early_log=()
    mkdir -p "$dir"
    # A wrapper around the chosen nginx/*.conf: module, pid, logs, all under run/.
    cat >"$dir/nginx.conf" <<EOF
# Generated by scripts/cluster.sh at each \`up\`: edit nginx/*.conf instead.
$NGINX_LOAD
worker_processes 1;
pid "$dir/nginx.pid";
error_log "$(log_file nginx)" info;
events {
    worker_connections 4096;
}
stream {
    # One line a session, when it ends: which node the client got.
    log_format chat '\$remote_addr:\$remote_port -> \$upstream_addr status \$status \$session_time s, in \$bytes_received out \$bytes_sent bytes';
    access_log "$RUN/nginx-access.log" chat;
    include "$NGINX_CONF";
}
EOF
    # -e (nginx 1.19.5+): errors before the config is read go to our log too.
    if "$nginx" -h 2>&1 | grep -q -- '-e filename'; then early_log=(-e "$(log_file nginx)"); fi
    if ! "$nginx" -t -p "$dir/" "${early_log[@]}" -c "$dir/nginx.conf" >>"$(log_file nginx)" 2>&1; then
        warn "nginx rejects $(rel "$dir/nginx.conf") (with $(rel "$NGINX_CONF"))"
        tail_log nginx
        return 1
    fi
    launch nginx "$nginx" -p "$dir/" "${early_log[@]}" -c "$dir/nginx.conf" -g 'daemon off;'
    wait_ready nginx chat_ready "$LB_PORT"
}

summary() {
    local name pid
    for name in $(all_names); do
        pid=$(running_pid "$name" || true)
        case "$name" in
            mariadb) say "  $(describe "$name")  pid ${pid:--}  $DB_URL" ;;
            redis) say "  $(describe "$name")  pid ${pid:--}  $REDIS_URL" ;;
            nginx) say "  $(describe "$name")  pid ${pid:--}  $(conf_name "$(running_nginx_conf)")" ;;
            *) say "  $(describe "$name")  pid ${pid:--}" ;;
        esac
    done
    say "logs and PID files: $(rel "$RUN")/*.log, $(rel "$RUN")/*.pid"
    say "connect:  ./bin/ChatClient 127.0.0.1 $LB_PORT"
    say "stop:     ./autobuild.sh cluster down"
}

cmd_up() {
    local name port todo=() taken=() owner
    read_layout
    lock
    TIDY=1
    for name in $(all_names); do
        running_pid "$name" >/dev/null || todo+=("$name")
    done
    if [ -n "${CLUSTER_NGINX:-}" ] && [ "$REQUESTED_CONF" != "$NGINX_CONF" ]; then
        warn "nginx already runs with $(conf_name "$NGINX_CONF"), not $(conf_name "$REQUESTED_CONF"): 'down' first to switch"
    fi
    if [ "${#todo[@]}" -eq 0 ]; then
        say "the cluster is already up:"
        summary
        return 0
    fi
    find_programs "${todo[@]}"
    # Every port first: fail before anything starts.
    for name in "${todo[@]}"; do
        port=$(port_of "$name")
        if port_open "$port"; then
            owner=$(port_owner "$port")
            taken+=("127.0.0.1:$port, wanted by $name, is taken${owner:+ (by $owner)}")
        fi
    done
    if [ "${#taken[@]}" -gt 0 ]; then
        for name in "${taken[@]}"; do warn "$name"; done
        warn "nothing was started. Stop what holds the port (a system MariaDB or Redis? e.g. 'service redis-server stop'), or move ours: CLUSTER_DB_PORT=N, CLUSTER_REDIS_PORT=N (the ChatServers' and nginx's ports are those of $(rel "$NGINX_CONF"))"
        exit 1
    fi
    trap 'warn "interrupted"; roll_back' INT TERM
    # Start order: storage, bus, nodes, then the balancer in front of them.
    if [[ " ${todo[*]} " == *" mariadb "* ]]; then start_mariadb || roll_back; fi
    if [[ " ${todo[*]} " == *" redis "* ]]; then start_redis || roll_back; fi
    for port in "${NODE_PORTS[@]}"; do
        if [[ " ${todo[*]} " == *" chatserver-$port "* ]]; then start_node "$port" || roll_back; fi
    done
    for port in "${NODE_PORTS[@]}"; do
        if [[ " ${todo[*]} " == *" chatserver-$port "* ]]; then
            wait_ready "chatserver-$port" chat_ready "$port" || roll_back
        fi
    done
    if [[ " ${todo[*]} " == *" nginx "* ]]; then start_nginx || roll_back; fi
    trap - INT TERM
    say "the cluster is up (started: ${STARTED[*]}):"
    summary
}

cmd_down() {
    local name names=() nodes=()
    read_layout
    lock
    TIDY=1
    # Also nodes of another config's upstream that an earlier `up` started.
    for name in "$RUN"/chatserver-*.pid; do
        [ -e "$name" ] || continue
        name=$(basename "$name" .pid)
        nodes+=("$name")
    done
    for name in $(all_names); do
        if [ -f "$(pid_file "$name")" ]; then names+=("$name"); fi
    done
    for name in nginx "${nodes[@]}" redis mariadb; do
        if [ -f "$(pid_file "$name")" ] && ! running_pid "$name" >/dev/null; then
            say "$name was not running (removed its stale PID file)"
        fi
    done
    if [ "${#names[@]}" -eq 0 ] && [ "${#nodes[@]}" -eq 0 ]; then
        say "the cluster is not running (no PID files in $(rel "$RUN"))"
        return 0
    fi
    # The balancer first, then the nodes (their graceful stop writes to MariaDB and
    # leaves the bus), then the bus and the database.
    stop_all nginx
    stop_all "${nodes[@]}"
    stop_all redis
    stop_all mariadb
    for name in nginx "${nodes[@]}" redis mariadb; do
        if [ -f "$(pid_file "$name")" ]; then
            warn "$name still has $(rel "$(pid_file "$name")")"
            exit 1
        fi
    done
    say "the cluster is down (the database stays in $(rel "$RUN/mariadb/data"))"
}

cmd_status() {
    local name pid file up=0 total=0 conf
    read_layout
    for name in $(all_names); do
        total=$((total + 1))
        file=$(pid_file "$name")
        if pid=$(running_pid "$name"); then
            up=$((up + 1))
            conf=""
            if [ "$name" = nginx ]; then conf="  ($(conf_name "$(running_nginx_conf)"))"; fi
            say "$(describe "$name")  pid $pid  running$conf"
        elif [ -f "$file" ]; then
            say "$(describe "$name")  pid $(head -n 1 "$file")  NOT running (stale $(rel "$file"))"
        else
            say "$(describe "$name")  -         not running"
        fi
    done
    if [ "$up" -eq "$total" ]; then
        say "all $total up; connect: ./bin/ChatClient 127.0.0.1 $LB_PORT"
        return 0
    elif [ "$up" -eq 0 ]; then
        say "the cluster is down"
        return 3
    fi
    say "$up of $total up ('up' starts the rest)"
    return 1
}

usage() {
    say "usage: scripts/cluster.sh up|down|status   (or ./autobuild.sh cluster up|down|status)" >&2
    say "  CLUSTER_NGINX=round-robin|consistent-hash|least-conn picks nginx/NAME.conf for 'up'" >&2
    exit 2
}

case "${1:-}" in
    up) cmd_up ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) usage ;;
esac

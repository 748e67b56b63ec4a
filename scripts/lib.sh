# Shared by the project's scripts: the persistent build folder and the
# local services. Sourced, not run.

# Builds live outside the clone so a fresh clone (and CI) reuses them.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/signal9-target}"
BIN="$CARGO_TARGET_DIR/debug"

log() { printf '[signal9] %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
  local port=$1 name=$2 tries=${3:-60}
  for _ in $(seq "$tries"); do
    port_open "$port" && return 0
    sleep 1
  done
  log "$name did not come up on port $port"
  return 1
}

need_cmd() {
  command -v "$1" >/dev/null 2>&1 && return 0
  log "installing $2 (needs apt-get)"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$2") >/dev/null
}

# Starts Redis and RabbitMQ if they are not already answering.
ensure_services() {
  if ! port_open 6379; then
    need_cmd redis-server redis-server
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log >/dev/null
    wait_port 6379 Redis
  fi
  if ! port_open 5672; then
    need_cmd rabbitmq-server rabbitmq-server
    log "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
    wait_port 5672 RabbitMQ 120
  fi
}

# A local three-node Redis Cluster (no replicas, nothing on disk) for the
# cluster tests, on ports 7101-7103 unless SIGNAL9_REDIS_CLUSTER_PORTS says
# otherwise. Started if its first port is closed; tests find it through
# SIGNAL9_TEST_REDIS_CLUSTER.
REDIS_CLUSTER_PORTS="${SIGNAL9_REDIS_CLUSTER_PORTS:-7101 7102 7103}"
export SIGNAL9_TEST_REDIS_CLUSTER="${SIGNAL9_TEST_REDIS_CLUSTER:-redis-cluster://$(printf '127.0.0.1:%s,' $REDIS_CLUSTER_PORTS | sed 's/,$//')}"
ensure_redis_cluster() {
  local first nodes=()
  first=${REDIS_CLUSTER_PORTS%% *}
  if port_open "$first" && redis-cli -p "$first" cluster info 2>/dev/null | grep -q 'cluster_state:ok'; then
    return 0
  fi
  need_cmd redis-server redis-server
  need_cmd redis-cli redis-tools
  log "starting a Redis Cluster on ports $REDIS_CLUSTER_PORTS"
  for port in $REDIS_CLUSTER_PORTS; do
    local dir="$HOME/.cache/signal9-redis-cluster/$port"
    mkdir -p "$dir"
    if ! port_open "$port"; then
      rm -f "$dir/nodes.conf"
      redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --cluster-enabled yes \
        --cluster-config-file "$dir/nodes.conf" --save "" --appendonly no --dir "$dir" \
        --logfile "$dir/redis.log" >/dev/null
      wait_port "$port" "Redis Cluster node"
    fi
    nodes+=("127.0.0.1:$port")
  done
  if ! redis-cli -p "$first" cluster info | grep -q 'cluster_state:ok'; then
    redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
    for _ in $(seq 30); do
      redis-cli -p "$first" cluster info | grep -q 'cluster_state:ok' && return 0
      sleep 1
    done
    log "the Redis Cluster did not reach cluster_state:ok"
    return 1
  fi
}

# A local three-node RabbitMQ cluster for the broker-failover tests, on
# ports 5681-5683 unless SIGNAL9_RABBIT_CLUSTER_PORTS says otherwise: nodes
# signal9-c1..3@localhost with their own data, logs, config and (no)
# plugins under /var/lib/rabbitmq/signal9-cluster, so the machine's RabbitMQ
# is untouched. Started (and joined) if its first port is closed; tests
# find it through SIGNAL9_TEST_RABBIT_CLUSTER (the three URLs, comma-separated).
RABBIT_CLUSTER_PORTS="${SIGNAL9_RABBIT_CLUSTER_PORTS:-5681 5682 5683}"
export SIGNAL9_TEST_RABBIT_CLUSTER="${SIGNAL9_TEST_RABBIT_CLUSTER:-$(printf 'amqp://guest:guest@127.0.0.1:%s/%%2f,' $RABBIT_CLUSTER_PORTS | sed 's/,$//')}"
rabbit_cluster_env() {
  # Debian's rabbitmq-server runs the node as the rabbitmq user: its
  # folders live under that user's home.
  local i=$1 port=$2 dir="/var/lib/rabbitmq/signal9-cluster/c$1"
  mkdir -p "$dir/mnesia" "$dir/log"
  [ -f "$dir/enabled_plugins" ] || echo '[].' >"$dir/enabled_plugins"
  printf 'listeners.tcp.local = 127.0.0.1:%s\nloopback_users = none\n' "$port" >"$dir/rabbitmq.conf"
  : >"$dir/rabbitmq-env.conf"
  chown -R rabbitmq:rabbitmq "$dir" 2>/dev/null || true
  echo "RABBITMQ_NODENAME=signal9-c$i@localhost RABBITMQ_NODE_PORT=$port RABBITMQ_DIST_PORT=$((port + 20000))" \
    "RABBITMQ_MNESIA_BASE=$dir/mnesia RABBITMQ_LOG_BASE=$dir/log RABBITMQ_PID_FILE=$dir/pid" \
    "RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins" \
    "RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf ERL_EPMD_ADDRESS=127.0.0.1"
}
# rabbitmqctl against node N of the local cluster.
rabbit_cluster_ctl() {
  local i=$1
  shift
  rabbitmqctl -n "signal9-c$i@localhost" "$@"
}
# How many nodes of the local cluster run, as its first node sees it.
rabbit_cluster_running() {
  [ "$(rabbit_cluster_ctl 1 -q eval 'length(rabbit_nodes:all_running()).' 2>/dev/null)" = "$(echo $RABBIT_CLUSTER_PORTS | wc -w)" ]
}
ensure_rabbitmq_cluster() {
  local first i=0 port
  first=${RABBIT_CLUSTER_PORTS%% *}
  if port_open "$first" && rabbit_cluster_running; then
    return 0
  fi
  need_cmd rabbitmq-server rabbitmq-server
  log "starting a RabbitMQ cluster on ports $RABBIT_CLUSTER_PORTS"
  for port in $RABBIT_CLUSTER_PORTS; do
    i=$((i + 1))
    port_open "$port" || env $(rabbit_cluster_env "$i" "$port") rabbitmq-server -detached >/dev/null 2>&1 || true
  done
  i=0
  for port in $RABBIT_CLUSTER_PORTS; do
    i=$((i + 1))
    wait_port "$port" "RabbitMQ cluster node $i" 120
    rabbit_cluster_ctl "$i" await_startup >/dev/null 2>&1 || true
  done
  local n=$i
  for i in $(seq 2 "$n"); do
    if ! rabbit_cluster_ctl "$i" cluster_status 2>/dev/null | grep -q 'signal9-c1@localhost'; then
      rabbit_cluster_ctl "$i" stop_app >/dev/null
      rabbit_cluster_ctl "$i" reset >/dev/null
      rabbit_cluster_ctl "$i" join_cluster signal9-c1@localhost >/dev/null 2>&1
      rabbit_cluster_ctl "$i" start_app >/dev/null 2>&1
    fi
  done
  rabbit_cluster_running || { log "the RabbitMQ cluster did not form"; return 1; }
}

# The project's Python tools live in one venv outside the clone.
VENV="$HOME/.cache/signal9-venv"
ensure_venv() {
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
}

# The local AWS-API server (moto's server mode: DynamoDB and Secrets Manager
# in one process), installed from PyPI into the venv and started if its port
# is closed. Tests find it through SIGNAL9_TEST_AWS_ENDPOINT.
MOTO_PORT="${SIGNAL9_MOTO_PORT:-5000}"
export SIGNAL9_TEST_AWS_ENDPOINT="${SIGNAL9_TEST_AWS_ENDPOINT:-http://127.0.0.1:$MOTO_PORT}"
ensure_moto() {
  port_open "$MOTO_PORT" && return 0
  ensure_venv
  if [ ! -x "$VENV/bin/moto_server" ]; then
    log "installing moto (the local AWS-API server) from PyPI"
    "$VENV/bin/pip" install -q 'moto[server]==5.2.5'
  fi
  log "starting moto on port $MOTO_PORT"
  setsid nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$HOME/.cache/signal9-moto.log" 2>&1 &
  wait_port "$MOTO_PORT" moto 60
}

# The official Python SDK, which the SDK tests point at the simulator (and,
# later, at signal9's own read API). Pinned; tests find the interpreter
# through SIGNAL9_TEST_PYTHON.
ensure_alpaca_py() {
  ensure_venv
  # Checked from / : in the repository, the crate folder `alpaca/` would
  # import as an empty namespace package and hide a missing SDK.
  if ! (cd / && "$VENV/bin/python" -c 'import alpaca.data.historical') >/dev/null 2>&1; then
    log "installing alpaca-py (the official Alpaca SDK) from PyPI"
    "$VENV/bin/pip" install -q 'alpaca-py==0.44.0'
  fi
  # The Arrow tests read the read API's Arrow streams with pyarrow, and
  # show them into pandas (alpaca-py's own dependency) and polars.
  if ! (cd / && "$VENV/bin/python" -c 'import pyarrow, polars') >/dev/null 2>&1; then
    log "installing pyarrow and polars from PyPI"
    "$VENV/bin/pip" install -q 'pyarrow==22.0.0' 'polars==1.35.2'
  fi
  export SIGNAL9_TEST_PYTHON="$VENV/bin/python"
}

ensure_rust() {
  command -v cargo >/dev/null 2>&1 || { log "cargo is required (https://rustup.rs)"; exit 1; }
}

# The browser test: Debian's Chromium and its WebDriver, and selenium (from
# PyPI, pinned) to drive them. Tests find the interpreter through
# SIGNAL9_TEST_PYTHON.
ensure_browser() {
  need_cmd chromium chromium
  need_cmd chromedriver chromium-driver
  ensure_venv
  if ! (cd / && "$VENV/bin/python" -c 'import selenium.webdriver') >/dev/null 2>&1; then
    log "installing selenium (WebDriver client) from PyPI"
    "$VENV/bin/pip" install -q 'selenium==4.27.1'
  fi
  export SIGNAL9_TEST_PYTHON="$VENV/bin/python"
}

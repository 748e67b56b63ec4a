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

ensure_rust() {
  command -v cargo >/dev/null 2>&1 || { log "cargo is required (https://rustup.rs)"; exit 1; }
}

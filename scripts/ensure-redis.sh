#!/usr/bin/env bash
# Make sure a Redis server answers at the URL given as $1 (default: $ARBITER_REDIS_URL or
# redis://127.0.0.1:6379/0). Starts Debian's redis-server on loopback when none answers,
# installing the package first when it is missing and we are root.
set -euo pipefail
url="${1:-${ARBITER_REDIS_URL:-redis://127.0.0.1:6379/0}}"
hostport="${url#redis://}"
hostport="${hostport#*@}"
hostport="${hostport%%/*}"
host="${hostport%%:*}"
port="${hostport##*:}"
[ "$port" = "$hostport" ] && port=6379
root="$(cd "$(dirname "$0")/.." && pwd)"

ping() {
  if command -v redis-cli >/dev/null 2>&1; then
    [ "$(redis-cli -h "$host" -p "$port" ping 2>/dev/null)" = "PONG" ]
  else
    (exec 3<>"/dev/tcp/$host/$port" && printf 'PING\r\n' >&3 && read -r -t 2 reply <&3 \
      && [[ "$reply" == +PONG* ]]) 2>/dev/null
  fi
}

if ping; then
  echo "redis: answering at $host:$port"
  exit 0
fi
case "$host" in
  127.*|localhost) ;;
  *) echo "redis: nothing answers at $host:$port and it is not a loopback address;" \
          "start it there or point ARBITER_REDIS_URL at a running server" >&2; exit 1 ;;
esac
if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis: installing Debian's redis-server package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis: redis-server is not installed. Install it with:" >&2
    echo "    sudo apt-get install redis-server" >&2
    exit 1
  fi
fi
mkdir -p "$root/var/redis"
redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
  --dir "$root/var/redis" --logfile "$root/var/redis/redis-$port.log"
for _ in $(seq 1 50); do
  if ping; then echo "redis: started on 127.0.0.1:$port"; exit 0; fi
  sleep 0.1
done
echo "redis: started redis-server but it does not answer on port $port; see var/redis/" >&2
exit 1

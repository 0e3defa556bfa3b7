#!/usr/bin/env bash
# Make sure the PostgreSQL server of the tests answers at the URL given as $1 (default:
# $ARBITER_TEST_POSTGRES_URL or postgresql+psycopg://postgres@127.0.0.1:5432/test). Starts the
# machine's Debian cluster when it is installed but stopped; installs Debian's postgresql
# package when missing and we are root (then allows password-less loopback connections for the
# test role and creates the test database). Otherwise says exactly what to do.
set -euo pipefail
url="${1:-${ARBITER_TEST_POSTGRES_URL:-postgresql+psycopg://postgres@127.0.0.1:5432/test}}"
rest="${url#*://}"
userinfo="${rest%%@*}"; [ "$userinfo" = "$rest" ] && userinfo="postgres"
user="${userinfo%%:*}"
hostpart="${rest#*@}"; hostport="${hostpart%%/*}"; db="${hostpart#*/}"; db="${db%%\?*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$hostport" ] && port=5432

answers() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if answers; then
  echo "postgres: answering at $host:$port"
  exit 0
fi
case "$host" in
  127.*|localhost) ;;
  *) echo "postgres: nothing answers at $host:$port; start it or point ARBITER_TEST_POSTGRES_URL" \
          "at a running server" >&2; exit 1 ;;
esac
installed_now=0
if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
    echo "postgres: installing Debian's postgresql package"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    installed_now=1
  else
    echo "postgres: no PostgreSQL server here. Install and start one with:" >&2
    echo "    sudo apt-get install postgresql && sudo pg_ctlcluster <version> main start" >&2
    exit 1
  fi
fi
version="$(ls /etc/postgresql | sort -V | tail -n 1)"
if [ "$installed_now" = "1" ]; then
  # Password-less loopback access for the tests, as on the development machines.
  hba="/etc/postgresql/$version/main/pg_hba.conf"
  sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
fi
pg_ctlcluster --skip-systemctl-redirect "$version" main start 2>/dev/null \
  || pg_ctlcluster "$version" main start
for _ in $(seq 1 100); do answers && break; sleep 0.1; done
if ! answers; then
  echo "postgres: the cluster $version/main does not answer on port $port" >&2
  exit 1
fi
if [ "$installed_now" = "1" ]; then
  su postgres -c "psql -q -c \"select 1\" -d '$db'" >/dev/null 2>&1 \
    || su postgres -c "createdb '$db'"
  [ "$user" = "postgres" ] || su postgres -c "createuser --superuser '$user'" 2>/dev/null || true
fi
echo "postgres: started $version/main on $host:$port"

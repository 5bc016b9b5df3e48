#!/bin/sh
# The database of the compose `scale` profile: at the first start, a cluster
# with a role and a database `wharf` whose password is 32 random bytes,
# written to /run/wharf-db/password (readable by root only: the replicas'
# containers read it, and Wharf's users never can). Connections from the
# network need that password (SCRAM); the server then runs as `postgres`.
set -eu
data=/var/lib/postgresql/data
secret=/run/wharf-db/password
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
umask 077
if [ ! -s "$secret" ]; then
  head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$secret.new"
  mv "$secret.new" "$secret"
fi
chmod 600 "$secret"
chown -R postgres:postgres "$data"
chmod 700 "$data"
if [ ! -s "$data/PG_VERSION" ]; then
  setpriv --reuid=postgres --regid=postgres --init-groups \
    "$bin/initdb" -D "$data" -U postgres --auth-local=peer --auth-host=scram-sha-256 \
    --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  password=$(cat "$secret")
  printf "CREATE ROLE wharf LOGIN PASSWORD '%s';\nCREATE DATABASE wharf OWNER wharf;\n" "$password" \
    | setpriv --reuid=postgres --regid=postgres --init-groups \
        "$bin/postgres" --single -D "$data" postgres >/dev/null
  cat > "$data/pg_hba.conf" <<'HBA'
# Inside the container: the postgres account by peer. From the network: the
# wharf role on the wharf database, by password, and nothing else.
local all  postgres peer
host  wharf wharf 0.0.0.0/0 scram-sha-256
host  wharf wharf ::/0      scram-sha-256
HBA
  chown postgres:postgres "$data/pg_hba.conf"
  echo "wharf-postgres: a new cluster, role and database wharf; the password is in $secret"
fi
mkdir -p /run/postgresql
chown postgres:postgres /run/postgresql
exec setpriv --reuid=postgres --regid=postgres --init-groups \
  "$bin/postgres" -D "$data" -c listen_addresses='*' -c unix_socket_directories=/run/postgresql

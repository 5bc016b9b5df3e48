# PostgreSQL for the compose `scale` profile, from Debian's own package (no
# other image registry needed). Its password is made at the first start
# and shared with the Wharf replicas through a volume of its own.
ARG BASE=debian:trixie-slim
FROM ${BASE}
RUN command -v pg_ctlcluster >/dev/null \
 || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postgresql \
     && rm -rf /var/lib/apt/lists/*)
COPY postgres-entrypoint.sh /usr/local/bin/wharf-postgres
VOLUME ["/var/lib/postgresql/data", "/run/wharf-db"]
EXPOSE 5432
ENTRYPOINT ["/usr/local/bin/wharf-postgres"]

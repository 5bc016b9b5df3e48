# HAProxy for the compose `scale` profile, from Debian's own package.
ARG BASE=debian:trixie-slim
FROM ${BASE}
RUN command -v haproxy >/dev/null \
 || (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends haproxy \
     && rm -rf /var/lib/apt/lists/*)
COPY haproxy.cfg /etc/haproxy/haproxy.cfg
USER haproxy
EXPOSE 2220 2221 2223 2224
ENTRYPOINT ["haproxy", "-W", "-db", "-f", "/etc/haproxy/haproxy.cfg"]

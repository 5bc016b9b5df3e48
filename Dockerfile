# Wharf: every binary in one image; docker-compose.yml runs each daemon in
# its own container over a shared volume.

# Build: the whole workspace, release, with the lockfile as committed. The
# target directory is a BuildKit cache mount: after a change to Wharf's
# sources only Wharf's crates compile again, not its dependencies (most of
# a first build's minutes).
FROM rust:1.95-slim-trixie AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/src/target \
    cargo build --release --locked --bins \
 && mkdir /out \
 && cp target/release/wharfd target/release/wharf-ftpd target/release/wharf-chatd \
       target/release/wharf-execd target/release/wharf-exec-launch target/release/wharf-sshd \
       target/release/admin-cli target/release/wharf-ftp \
       target/release/wharf-chat target/release/wharf-exec /out/

# Run: a slim system, the data on a volume. The image's default user is the
# unprivileged `wharf` (file transfer and chat serve; exec stays off, saying
# why, unless the container may create namespaces). docker-compose.yml runs
# each daemon as root inside the container instead, with every capability
# dropped but the few it needs, so that each Wharf user's files and
# commands get a uid of their own.
FROM debian:trixie-slim
# btrfs-progs: where the data volume is on btrfs with quotas on, each home
# is a subvolume the kernel holds to its quota (README: "Quotas"). passt:
# pasta, the way out of a user's private network for their commands
# (--exec-network private; it also needs /dev/net/tun, see
# docker-compose.yml). rsync and openssh-client's scp: what `rsync -e ssh`
# and `scp -O` run on the server's side, in the commands' sandbox.
RUN if ! command -v btrfs >/dev/null 2>&1 || ! command -v pasta >/dev/null 2>&1 \
      || ! command -v rsync >/dev/null 2>&1 || ! command -v scp >/dev/null 2>&1; then \
      apt-get update && apt-get install -y --no-install-recommends btrfs-progs passt rsync openssh-client \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
 && useradd --system --uid 10001 --user-group --home-dir /var/lib/wharf --create-home wharf \
 && mkdir -p /var/lib/wharf/data /home \
 && chown wharf:wharf /var/lib/wharf/data \
 && chmod 0700 /var/lib/wharf/data
COPY --from=build /out/ /usr/local/bin/
USER wharf
WORKDIR /var/lib/wharf
ENV WHARF_DATA_DIR=/var/lib/wharf/data
VOLUME ["/var/lib/wharf/data"]
EXPOSE 2121/tcp 2100/tcp 50000-50009/tcp 2122/tcp 2122/udp 2123/tcp 2222/tcp
CMD ["wharfd"]

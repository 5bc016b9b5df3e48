#!/usr/bin/env bash
# Installs Wharf as a systemd service on this machine, after
# `cargo build --release`:
#
#   sudo bash deploy/install.sh
#
# Binaries to /usr/local/bin (their man pages and bash and zsh completions
# to /usr/local/share), deploy/systemd/wharfd.service to
# /etc/systemd/system, wharfd.example.toml to /etc/wharf/wharfd.toml (kept if
# there already), then the service is enabled and started. Data lives in
# /var/lib/wharf (systemd's StateDirectory). ROOT=DIR installs under DIR
# instead and leaves systemctl alone (for packaging, and for the tests);
# BIN_DIR=DIR takes the binaries from DIR instead of target/release.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=${ROOT:-}
BIN_DIR=${BIN_DIR:-target/release}
BINS=(wharfd wharf-ftpd wharf-chatd wharf-execd wharf-sshd admin-cli wharf-ftp wharf-chat wharf-exec)
# Run by the daemons only (it starts each command): no page of its own.
HELPERS=(wharf-exec-launch)

if [ -z "$ROOT" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run it as root (sudo bash deploy/install.sh)" >&2
  exit 1
fi
for b in "${BINS[@]}" "${HELPERS[@]}"; do
  [ -x "$BIN_DIR/$b" ] || { echo "install.sh: $BIN_DIR/$b is missing; run cargo build --release first" >&2; exit 1; }
done
install -d -m 755 "$ROOT/usr/local/bin" "$ROOT/etc/systemd/system"
install -d -m 750 "$ROOT/etc/wharf"
for b in "${BINS[@]}" "${HELPERS[@]}"; do
  install -m 755 "$BIN_DIR/$b" "$ROOT/usr/local/bin/$b"
done
# A man page and bash and zsh completions for every binary, from the
# binary itself (one page holds all of a program's subcommands).
man="$ROOT/usr/local/share/man/man1"
bash_dir="$ROOT/usr/local/share/bash-completion/completions"
zsh_dir="$ROOT/usr/local/share/zsh/site-functions"
install -d -m 755 "$man" "$bash_dir" "$zsh_dir"
for b in "${BINS[@]}"; do
  "$BIN_DIR/$b" --man > "$man/$b.1"
  "$BIN_DIR/$b" --completions bash > "$bash_dir/$b"
  "$BIN_DIR/$b" --completions zsh > "$zsh_dir/_$b"
done
chmod 644 "$man"/*.1 "$bash_dir"/* "$zsh_dir"/_*
install -m 644 deploy/systemd/wharfd.service "$ROOT/etc/systemd/system/wharfd.service"
if [ -e "$ROOT/etc/wharf/wharfd.toml" ]; then
  echo "kept $ROOT/etc/wharf/wharfd.toml"
else
  install -m 640 wharfd.example.toml "$ROOT/etc/wharf/wharfd.toml"
  echo "installed $ROOT/etc/wharf/wharfd.toml: edit it, then: systemctl restart wharfd"
fi
if [ -z "$ROOT" ]; then
  systemctl daemon-reload
  systemctl enable --now wharfd
  echo "wharfd is running: systemctl status wharfd; journalctl -u wharfd -o cat"
  echo "add a user: admin-cli --data-dir /var/lib/wharf user add NAME"
fi

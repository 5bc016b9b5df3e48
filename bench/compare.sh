#!/usr/bin/env bash
# compare.sh: Wharf beside the tools people would use instead, on this
# machine, in one run, on the same files, rounds interleaved so that a noisy
# neighbour hurts every contender alike. Prints a table with ratios.
#
#   bash bench/compare.sh            # 1 GiB file, 1,000 small files, 3 rounds
#   SIZE=256M FILES=200 ROUNDS=3 COMMANDS=200 bash bench/compare.sh
#
# Contenders: md5sum (the floor of a verified transfer); scp and sftp
# against a throwaway sshd (openssh-server), and sftp against Wharf's SSH
# door (wharf-sshd) with the same client, key and cipher; curl and lftp against a
# throwaway vsftpd (plain FTP, anonymous uploads into a scratch directory),
# and the same two clients against Wharf's standard FTP listener (plain FTP
# on loopback, as vsftpd here);
# ssh with a ControlMaster connection for remote commands (OpenSSH's as a
# user whose shell is /bin/sh, made if missing: wharf-peer; Wharf's SSH
# door's in its sandbox); Wharf's own client over TLS against the encrypted
# peers (scp, sftp, ssh) and with --no-tls against the plain ones (curl and
# lftp to vsftpd); a piped wharf-ftp script of one `put` per line against
# the same lines through `sftp -b`. Wharf's put returns once the file is
# on disk (fsynced): it is set beside scp followed by an fsync of the file
# and `sftp put -f` (OpenSSH's fsync@openssh.com), like for like, and
# beside plain scp and sftp, which return before the disk has the file.
# And ngircd for
# chat, through `cargo bench -p wharf-chatd --bench fanout` (its "beside
# ngircd" part). Missing packages are installed (apt-get); every server
# listens on 127.0.0.1 only and is stopped at the end. Wharf runs with TLS
# on (its default), its daemons as built by `cargo build --release`. Needs
# root (sshd, vsftpd, and wharf-execd's sandbox). Not run by .ci/run.
# CHAT=0 leaves the chat comparison out.
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-1G}
FILES=${FILES:-1000}
ROUNDS=${ROUNDS:-3}
COMMANDS=${COMMANDS:-1000}
W=$(mktemp -d /tmp/wharf-compare.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$W"
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "compare.sh needs root (sshd, wharf-execd's sandbox)" >&2; exit 1; }

missing=()
[ -x /usr/sbin/sshd ] || missing+=(openssh-server)
[ -x /usr/sbin/vsftpd ] || missing+=(vsftpd)
command -v lftp >/dev/null || missing+=(lftp)
command -v curl >/dev/null || missing+=(curl)
[ "${CHAT:-1}" = 0 ] || [ -x /usr/sbin/ngircd ] || missing+=(ngircd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing ${missing[*]} for the comparison..." >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  for unit in ssh vsftpd ngircd; do systemctl disable --now "$unit" >/dev/null 2>&1 || true; done
fi
cargo build --release --locked --bins -q
B=$PWD/target/release

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
# runs "$@" with output discarded; prints the seconds it took (after a
# sync: no contender pays for the previous one's writeback)
timed() { local t0 t1; sync; t0=$(now); "$@" >/dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; t1=$(now); echo "$t1 - $t0" | bc -l; }
# Waits until the daemon named $1 is idle (an upload's md5 is taken after
# it is stored, in the background): the next contender gets the machine.
settle() {
  local pid a b
  pid=$(pgrep -n -f "$B/$1" || true)
  [ -n "$pid" ] || return 0
  for _ in $(seq 150); do
    a=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    sleep 0.2
    b=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    [ $((b - a)) -le 1 ] && return 0
  done
}
# Reads a server's file into the page cache: every download starts from a
# cached file, as the peers' do (they wrote theirs through the cache, and
# Wharf writes uploads past it).
warm() { cat "$1" > /dev/null; }
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# --- a throwaway sshd -------------------------------------------------------
mkdir -p "$W/ssh" /run/sshd
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/host"
ssh-keygen -q -t ed25519 -N '' -f "$W/ssh/client"
cp "$W/ssh/client.pub" "$W/ssh/authorized_keys"
SSH_PORT=$(free_port)
cat > "$W/ssh/sshd_config" <<CFG
Port $SSH_PORT
ListenAddress 127.0.0.1
HostKey $W/ssh/host
AuthorizedKeysFile $W/ssh/authorized_keys
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
UsePAM no
PidFile $W/ssh/sshd.pid
Subsystem sftp internal-sftp
CFG
/usr/sbin/sshd -D -f "$W/ssh/sshd_config" -E "$W/ssh/log" & PIDS+=($!)
SSHO=(-F none -i "$W/ssh/client" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o BatchMode=yes -o LogLevel=ERROR)
for _ in $(seq 50); do ssh "${SSHO[@]}" -p "$SSH_PORT" root@127.0.0.1 true 2>/dev/null && break; sleep 0.1; done
CM=(-o ControlMaster=auto -o "ControlPath=$W/ssh/cm" -o ControlPersist=60)
CMW=(-o ControlMaster=auto -o "ControlPath=$W/ssh/cmw" -o ControlPersist=60)
# Commands run by OpenSSH as a user whose login shell is /bin/sh and who has
# no profile (root's .bashrc made each command cost 74-120 ms more).
id wharf-peer >/dev/null 2>&1 \
  || useradd --system --no-create-home --home-dir /nonexistent --shell /bin/sh wharf-peer
# Not locked (sshd without PAM turns a locked account away), no password.
usermod -p '*' wharf-peer
# sshd reads the authorized keys as the user logging in.
chmod o+x "$W" "$W/ssh"; chmod o+r "$W/ssh/authorized_keys"

# --- a throwaway vsftpd -----------------------------------------------------
# Anonymous, into $W/vsftpd/up (vsftpd refuses a writable anonymous root).
mkdir -p "$W/vsftpd/up" "$W/vsftpd-empty"
chown ftp "$W/vsftpd/up"
FTPD_PORT=$(free_port); PASV=$(free_port)
cat > "$W/vsftpd.conf" <<CFG
listen=YES
listen_address=127.0.0.1
listen_port=$FTPD_PORT
background=NO
anonymous_enable=YES
local_enable=NO
write_enable=YES
anon_upload_enable=YES
anon_mkdir_write_enable=YES
anon_other_write_enable=YES
anon_root=$W/vsftpd
no_anon_password=YES
anon_umask=022
pasv_enable=YES
pasv_address=127.0.0.1
pasv_min_port=$PASV
pasv_max_port=$((PASV + 50))
seccomp_sandbox=NO
isolate=NO
isolate_network=NO
secure_chroot_dir=$W/vsftpd-empty
xferlog_enable=NO
ftp_username=ftp
CFG
/usr/sbin/vsftpd "$W/vsftpd.conf" & PIDS+=($!)
VS=ftp://127.0.0.1:$FTPD_PORT

# --- Wharf ------------------------------------------------------------------
FTP_PORT=$(free_port); EXEC_PORT=$(free_port); STD_PORT=$(free_port); STD_PASV=$(free_port)
REAL_HOME=$HOME
export HOME=$W/home WHARF_PASSWORD='compare password'
mkdir -p "$HOME"
DB="sqlite://$W/data/wharf.db"
HOMEDIR=$W/data/homes/bench
echo "$WHARF_PASSWORD" | "$B/admin-cli" --database-url "$DB" user add bench --password-stdin \
  --services ftp,exec --quota unlimited --home "$W/data/homes/bench" >/dev/null
"$B/wharf-ftpd" --data-dir "$W/data" --listen "127.0.0.1:$FTP_PORT" \
  --std-ftp-listen "127.0.0.1:$STD_PORT" --std-ftp-passive-ports "$STD_PASV-$((STD_PASV + 50))" \
  >"$W/ftpd.log" 2>&1 & PIDS+=($!)
WS_URL="ftp://bench:compare%20password@127.0.0.1:$STD_PORT"
# The same service without TLS, against the plain FTP peers.
PLAIN_PORT=$(free_port)
"$B/wharf-ftpd" --data-dir "$W/data" --listen "127.0.0.1:$PLAIN_PORT" --no-tls \
  >"$W/ftpd-plain.log" 2>&1 & PIDS+=($!)
"$B/wharf-execd" --data-dir "$W/data" --listen "127.0.0.1:$EXEC_PORT" --max-output 4G >"$W/execd.log" 2>&1 & PIDS+=($!)
# The SSH door, with the same client key as the sshd above.
WSSH_PORT=$(free_port)
"$B/admin-cli" --database-url "$DB" user key add bench "$W/ssh/client.pub" >/dev/null
"$B/wharf-sshd" --data-dir "$W/data" --listen "127.0.0.1:$WSSH_PORT" >"$W/sshd-wharf.log" 2>&1 & PIDS+=($!)
sleep 1
WF=("$B/wharf-ftp" --server "127.0.0.1:$FTP_PORT" --user bench -q --accept-new)
WX=("$B/wharf-exec" --server "127.0.0.1:$EXEC_PORT" --user bench --accept-new)
WP=("$B/wharf-ftp" --server "127.0.0.1:$PLAIN_PORT" --no-tls --user bench -q)
"${WF[@]}" ls >/dev/null
"${WP[@]}" ls >/dev/null
"${WX[@]}" -- true >/dev/null

# --- the files --------------------------------------------------------------
mkdir -p "$W/local" "$W/remote" "$W/small"
head -c "$SIZE" /dev/urandom > "$W/local/big.bin"
BYTES=$(stat -c %s "$W/local/big.bin")
for i in $(seq "$FILES"); do head -c 4096 /dev/urandom > "$W/small/f$i"; done
printf 'put %s\n' "$W"/small/* > "$W/sftp.batch"
# The same lines as a wharf-ftp script (run from the folder of the files).
printf 'put %s big.bin\n' "$W/local/big.bin" > "$W/sftp-put.batch"
printf 'put -f %s big.bin\n' "$W/local/big.bin" > "$W/sftp-put-f.batch"
printf 'get big.bin %s\n' "$W/down.bin" > "$W/sftp-get.batch"
# The same client and cipher against both SSH servers.
SFTP=(sftp "${SSHO[@]}" -c aes128-gcm@openssh.com)
for _ in $(seq "$COMMANDS"); do echo true; done > "$W/commands"
CIPHER=$(ssh "${SSHO[@]}" -G -p "$SSH_PORT" 127.0.0.1 | awk '$1=="ciphers"{split($2,c,","); print c[1]}')

declare -A T
# (timed runs in a subshell: a failure there leaves its figure empty)
add() { [ -n "$2" ] || { echo "compare.sh: the $1 run failed; stopping" >&2; exit 1; }; T[$1]+="$2 "; }
for r in $(seq "$ROUNDS"); do
  echo "round $r of $ROUNDS..." >&2
  add md5sum "$(timed md5sum "$W/local/big.bin")"
  rm -f "$W/remote/big.bin"
  add scp_up "$(timed scp "${SSHO[@]}" -P "$SSH_PORT" "$W/local/big.bin" "root@127.0.0.1:$W/remote/big.bin")"
  # The same, durable on the server's disk when it returns, as Wharf's put
  # is: scp, then an fsync of the file.
  rm -f "$W/remote/big.bin"
  add scp_up_sync "$(timed bash -c "scp ${SSHO[*]} -P $SSH_PORT $W/local/big.bin root@127.0.0.1:$W/remote/big.bin && sync $W/remote/big.bin")"
  add wharf_put "$(timed "${WF[@]}" put "$W/local/big.bin" big.bin)"
  rm -f "$W/vsftpd/up/big.bin"
  add curl_up "$(timed curl -sS -T "$W/local/big.bin" "$VS/up/big.bin")"
  "${WF[@]}" rm std.bin >/dev/null 2>&1 || true
  add curl_wharf_up "$(timed curl -sS -T "$W/local/big.bin" "$WS_URL/std.bin")"
  settle wharf-ftpd
  add wharf_put_plain "$(timed "${WP[@]}" put "$W/local/big.bin" plain.bin)"
  settle wharf-ftpd
  rm -f "$W/down.bin"
  warm "$W/remote/big.bin"
  add scp_down "$(timed scp "${SSHO[@]}" -P "$SSH_PORT" "root@127.0.0.1:$W/remote/big.bin" "$W/down.bin")"
  rm -f "$W/down.bin"
  warm "$HOMEDIR/big.bin"
  add wharf_get "$(timed "${WF[@]}" get big.bin "$W/down.bin")"
  cmp -s "$W/down.bin" "$W/local/big.bin" || { echo "wharf get: the copy differs" >&2; exit 1; }
  rm -f "$W/down.bin"
  warm "$HOMEDIR/plain.bin"
  add wharf_get_plain "$(timed "${WP[@]}" get plain.bin "$W/down.bin")"
  cmp -s "$W/down.bin" "$W/local/big.bin" || { echo "wharf get --no-tls: the copy differs" >&2; exit 1; }
  rm -f "$W/down.bin"
  warm "$W/vsftpd/up/big.bin"
  add curl_down "$(timed curl -sS -o "$W/down.bin" "$VS/up/big.bin")"
  rm -f "$W/down.bin"
  warm "$HOMEDIR/std.bin"
  add curl_wharf_down "$(timed curl -sS -o "$W/down.bin" "$WS_URL/std.bin")"
  cmp -s "$W/down.bin" "$W/local/big.bin" || { echo "curl from Wharf: the copy differs" >&2; exit 1; }
  rm -rf "$W/remote/small"; mkdir -p "$W/remote/small"
  add sftp_small "$(timed sftp "${SSHO[@]}" -P "$SSH_PORT" -b "$W/sftp.batch" "root@127.0.0.1:$W/remote/small")"
  # A fresh directory each round, as for sftp and lftp (replacing files
  # costs the file system more than creating them).
  add wharf_small "$(timed "${WF[@]}" put -r "$W/small" "small$r")"
  add wharf_small_plain "$(timed "${WP[@]}" put -r "$W/small" "plain-small$r")"
  # One `put` per line, piped, as a script written for sftp -b would be.
  { echo "mkdir lines$r"; echo "cd lines$r"; cat "$W/sftp.batch"; } > "$W/wharf-lines.txt"
  add wharf_lines "$(timed bash -c "\"\$@\" < $W/wharf-lines.txt" _ "${WF[@]}")"
  rm -rf "$W/vsftpd/up/small"
  add lftp_small "$(timed lftp -e "set cmd:fail-exit yes; mkdir up/small; cd up/small; mput $W/small/*; quit" "ftp://anonymous:@127.0.0.1:$FTPD_PORT")"
  add lftp_wharf_small "$(timed lftp -e "set cmd:fail-exit yes; set ftp:ssl-allow no; mkdir lftp$r; cd lftp$r; mput $W/small/*; quit" "$WS_URL")"
  # sftp against OpenSSH's sshd and against Wharf's SSH door.
  rm -f "$W/remote/big.bin"
  add sftp_put_openssh "$(timed "${SFTP[@]}" -P "$SSH_PORT" -b "$W/sftp-put.batch" "root@127.0.0.1:$W/remote")"
  # sftp's own durable put (fsync@openssh.com before it returns).
  rm -f "$W/remote/big.bin"
  add sftp_put_sync "$(timed "${SFTP[@]}" -P "$SSH_PORT" -b "$W/sftp-put-f.batch" "root@127.0.0.1:$W/remote")"
  # A new file on both sides (replacing one costs the file system its
  # old blocks).
  echo '-rm big.bin' | "${SFTP[@]}" -P "$WSSH_PORT" -b - "bench@127.0.0.1:/" >/dev/null 2>&1 || true
  add sftp_put_wharf "$(timed "${SFTP[@]}" -P "$WSSH_PORT" -b "$W/sftp-put.batch" "bench@127.0.0.1:/")"
  settle wharf-sshd
  rm -f "$W/down.bin"
  warm "$W/remote/big.bin"
  add sftp_get_openssh "$(timed "${SFTP[@]}" -P "$SSH_PORT" -b "$W/sftp-get.batch" "root@127.0.0.1:$W/remote")"
  rm -f "$W/down.bin"
  warm "$HOMEDIR/big.bin"
  add sftp_get_wharf "$(timed "${SFTP[@]}" -P "$WSSH_PORT" -b "$W/sftp-get.batch" "bench@127.0.0.1:/")"
  cmp -s "$W/down.bin" "$W/local/big.bin" || { echo "sftp from Wharf: the copy differs" >&2; exit 1; }
  rm -rf "$W/remote/small2"; mkdir -p "$W/remote/small2"
  add sftp_small_openssh "$(timed "${SFTP[@]}" -P "$SSH_PORT" -b "$W/sftp.batch" "root@127.0.0.1:$W/remote/small2")"
  { echo "mkdir ssh-small$r"; echo "cd ssh-small$r"; cat "$W/sftp.batch"; } > "$W/sftp-wharf.batch"
  add sftp_small_wharf "$(timed "${SFTP[@]}" -P "$WSSH_PORT" -b "$W/sftp-wharf.batch" "bench@127.0.0.1:/")"
  ssh "${SSHO[@]}" "${CM[@]}" -p "$SSH_PORT" wharf-peer@127.0.0.1 true
  add ssh_cmds "$(timed bash -c "while read -r c; do ssh -n ${SSHO[*]} ${CM[*]} -p $SSH_PORT wharf-peer@127.0.0.1 \"\$c\"; done < $W/commands")"
  # The same, multiplexed, to Wharf's SSH door (commands in the sandbox).
  ssh "${SSHO[@]}" "${CMW[@]}" -p "$WSSH_PORT" bench@127.0.0.1 true
  add ssh_cmds_wharf "$(timed bash -c "while read -r c; do ssh -n ${SSHO[*]} ${CMW[*]} -p $WSSH_PORT bench@127.0.0.1 \"\$c\"; done < $W/commands")"
  add wharf_cmds "$(timed bash -c "\"\$@\" < $W/commands" _ "${WX[@]}")"
  add ssh_stream "$(timed ssh "${SSHO[@]}" "${CM[@]}" -p "$SSH_PORT" wharf-peer@127.0.0.1 "head -c $BYTES /dev/zero")"
  add wharf_stream "$(timed "${WX[@]}" -- "head -c $BYTES /dev/zero")"
done
ssh "${SSHO[@]}" "${CM[@]}" -p "$SSH_PORT" -O exit wharf-peer@127.0.0.1 2>/dev/null || true
ssh "${SSHO[@]}" "${CMW[@]}" -p "$WSSH_PORT" -O exit bench@127.0.0.1 2>/dev/null || true

# Every round's seconds, for the record (stderr).
for k in $(printf '%s\n' "${!T[@]}" | sort); do echo "seconds, $k: ${T[$k]}" >&2; done
med() { tr ' ' '\n' <<<"${T[$1]}" | grep . | median; }
mbs() { echo "$BYTES / $(med "$1") / 1000000" | bc -l; }
per_s() { echo "$2 / $(med "$1")" | bc -l; }
ms_each() { echo "$(med "$1") * 1000 / $2" | bc -l; }
ratio() { echo "$1 / $2" | bc -l; }

MD5=$(mbs md5sum)
printf '\nWharf beside its peers: %s file, %s files of 4 KiB, %s commands; medians of %s interleaved rounds\n' \
  "$SIZE" "$FILES" "$COMMANDS" "$ROUNDS"
printf '%s, %s cores, %s; ssh cipher %s; Wharf over TLS 1.3 (AES-128-GCM)\n\n' \
  "$(date -u +%Y-%m-%d)" "$(nproc)" "$(uname -r)" "$CIPHER"
# row WORK WHARF PEER RATIO GOAL: one line of the table.
row() { printf '| %s | %s | %s | %s | %s |\n' "$@"; }
x() { printf '%.2f x' "$1"; }
printf '| work | Wharf | peer | ratio | goal |\n|---|---|---|---|---|\n'
P=$(mbs wharf_put); G=$(mbs wharf_get); SU=$(mbs scp_up); OP=$(mbs sftp_put_openssh)
OG=$(mbs sftp_get_openssh)
SUS=$(mbs scp_up_sync); OPS=$(mbs sftp_put_sync)
row "put $SIZE, TLS, on disk when it returns (md5-verified, fsynced)" "$(printf '%.0f MB/s' "$P")" \
  "$(printf 'scp + fsync %.0f, sftp put -f %.0f MB/s' "$SUS" "$OPS")" \
  "$(x "$(ratio "$P" "$SUS")") scp, $(x "$(ratio "$P" "$OPS")") sftp" ">= 1.0 x both"
row "put $SIZE, TLS, beside peers that return before the disk has it" "$(printf '%.0f MB/s' "$P")" \
  "$(printf 'scp %.0f, sftp %.0f MB/s (no fsync)' "$SU" "$OP")" \
  "$(x "$(ratio "$P" "$SU")") scp, $(x "$(ratio "$P" "$OP")") sftp" "-"
row "get $SIZE, TLS (md5-verified)" "$(printf '%.0f MB/s' "$G")" \
  "$(printf 'sftp %.0f MB/s; md5sum %.0f' "$OG" "$MD5")" \
  "$(x "$(ratio "$G" "$OG")") sftp, $(x "$(ratio "$G" "$MD5")") md5sum" ">= 1.0 x sftp, >= 0.9 x md5sum"
PP=$(mbs wharf_put_plain); PG=$(mbs wharf_get_plain); CUP=$(mbs curl_up); CDN=$(mbs curl_down)
row "put $SIZE, --no-tls (md5-verified, fsynced)" "$(printf '%.0f MB/s' "$PP")" \
  "$(printf 'curl to vsftpd %.0f MB/s (no md5, no fsync)' "$CUP")" "$(x "$(ratio "$PP" "$CUP")")" "-"
row "get $SIZE, --no-tls (md5-verified)" "$(printf '%.0f MB/s' "$PG")" \
  "$(printf 'curl from vsftpd %.0f MB/s (no md5)' "$CDN")" "$(x "$(ratio "$PG" "$CDN")")" "-"
WS=$(per_s wharf_small "$FILES"); SS=$(per_s sftp_small "$FILES"); LS=$(per_s lftp_small "$FILES")
WSP=$(per_s wharf_small_plain "$FILES"); WL=$(per_s wharf_lines "$FILES")
row "$FILES x 4 KiB, \`put -r\` (mput), TLS, each fsynced" "$(printf '%.0f files/s' "$WS")" \
  "$(printf 'sftp batch %.0f files/s' "$SS")" "$(x "$(ratio "$WS" "$SS")")" "keep >= 1.0"
row "$FILES x 4 KiB, \`put -r\`, --no-tls" "$(printf '%.0f files/s' "$WSP")" \
  "$(printf 'lftp mput to vsftpd %.0f files/s (no fsync)' "$LS")" "$(x "$(ratio "$WSP" "$LS")")" "-"
row "$FILES x 4 KiB, piped script, one \`put\` per line, TLS" "$(printf '%.0f files/s' "$WL")" \
  "$(printf 'the same lines by sftp -b %.0f files/s' "$SS")" "$(x "$(ratio "$WL" "$SS")")" ">= 1.0"
CU=$(mbs curl_wharf_up); CD=$(mbs curl_wharf_down); LW=$(per_s lftp_wharf_small "$FILES")
row "standard FTP: curl put $SIZE (fsynced, md5 kept after)" "$(printf '%.0f MB/s' "$CU")" \
  "$(printf 'curl to vsftpd %.0f MB/s' "$CUP")" "$(x "$(ratio "$CU" "$CUP")")" "-"
row "standard FTP: curl get $SIZE" "$(printf '%.0f MB/s' "$CD")" \
  "$(printf 'curl from vsftpd %.0f MB/s' "$CDN")" "$(x "$(ratio "$CD" "$CDN")")" "-"
row "standard FTP: lftp mput $FILES x 4 KiB (each fsynced)" "$(printf '%.0f files/s' "$LW")" \
  "$(printf 'lftp to vsftpd %.0f files/s' "$LS")" "$(x "$(ratio "$LW" "$LS")")" "-"
SP=$(mbs sftp_put_wharf); SG=$(mbs sftp_get_wharf)
row "SSH door: sftp put $SIZE (md5 kept after)" "$(printf '%.0f MB/s' "$SP")" \
  "$(printf 'OpenSSH sshd %.0f MB/s' "$OP")" "$(x "$(ratio "$SP" "$OP")")" ">= 1.0"
row "SSH door: sftp get $SIZE" "$(printf '%.0f MB/s' "$SG")" \
  "$(printf 'OpenSSH sshd %.0f MB/s' "$OG")" "$(x "$(ratio "$SG" "$OG")")" ">= 1.0"
WSS=$(per_s sftp_small_wharf "$FILES"); OSS=$(per_s sftp_small_openssh "$FILES")
row "SSH door: sftp put of $FILES x 4 KiB" "$(printf '%.0f files/s' "$WSS")" \
  "$(printf 'OpenSSH sshd %.0f files/s' "$OSS")" "$(x "$(ratio "$WSS" "$OSS")")" ">= 1.0"
WC=$(ms_each wharf_cmds "$COMMANDS"); SC=$(ms_each ssh_cmds "$COMMANDS")
row "exec, per command on one connection" "$(printf '%.2f ms' "$WC")" \
  "$(printf 'ssh ControlMaster, /bin/sh user, %.2f ms' "$SC")" "$(x "$(ratio "$WC" "$SC")") the time" "<= 0.5 x"
WSC=$(ms_each ssh_cmds_wharf "$COMMANDS")
row "SSH door: \`ssh host true\`, multiplexed, in the sandbox" "$(printf '%.2f ms' "$WSC")" \
  "$(printf 'OpenSSH sshd %.2f ms' "$SC")" "$(x "$(ratio "$WSC" "$SC")") the time" "<= 2 x"
WT=$(mbs wharf_stream); ST=$(mbs ssh_stream)
row "exec streaming \`head -c $SIZE\`, TLS" "$(printf '%.0f MB/s' "$WT")" \
  "$(printf 'ssh %.0f MB/s' "$ST")" "$(x "$(ratio "$WT" "$ST")")" ">= 1.5 x"
printf '\n(md5sum alone: %.0f MB/s)\n' "$MD5"

if [ "${CHAT:-1}" != 0 ]; then
  echo "chat beside ngircd (cargo bench -p wharf-chatd --bench fanout)..." >&2
  printf '\nChat, 500 members all talking (2 messages each, 10 bursts) and 10,000 idle sessions:\n\n'
  HOME=$REAL_HOME WHARF_BENCH_PEERS_ONLY=1 cargo bench -q -p wharf-chatd --bench fanout 2>"$W/chat.log" | grep '^|' \
    || { echo "compare.sh: the chat comparison failed:" >&2; tail -5 "$W/chat.log" >&2; exit 1; }
fi

#!/usr/bin/env bash
# compose-test.sh: the docker-compose stack started for real, then attacked as a
# hostile Wharf user would: the same attacks as services/exec/server/tests/it/isolation.rs,
# from the host's clients against the published ports. Run by .ci/run as root.
#
#   .ci/compose-test.sh [PROJECT_DIR]
#
# Nothing is pulled from an image registry: debian:trixie-slim is made with
# debootstrap from Debian's archive, and the image is the Dockerfile's runtime
# stage with the release binaries of PROJECT_DIR/target/release (built first
# when missing). dockerd (Debian's docker.io) runs in a network namespace of its
# own with its own roots under $WORK, so the host's network and any Docker on
# it are untouched. Everything started is stopped on exit; KEEP=1 keeps $WORK.
# (Adapted from shared/tools/compose-smoke.sh, its prebuilt mode.)
set -euo pipefail

PROJECT=$(realpath "${1:-.}")
MODE=prebuilt
WORK=${WORK:-/tmp/wharf-compose-test}
NS=${NS:-wharfcompose}
KEEP=${KEEP:-0}
T_START=$(date +%s)
step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - T_START ))" "$*"; }
die() { echo "FAIL: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root"
[ -f "$PROJECT/docker-compose.yml" ] && [ -f "$PROJECT/Dockerfile" ] || die "no Dockerfile/docker-compose.yml in $PROJECT"
case $MODE in prebuilt|full) ;; *) die "MODE is prebuilt or full" ;; esac
if [ -e "$WORK" ]; then die "$WORK exists (left by an earlier run?); remove it or set WORK"; fi
mkdir -p "$WORK"

NETNS_MOUNTED_BEFORE=0; mountpoint -q /run/netns && NETNS_MOUNTED_BEFORE=1
# dockerd 20.10 also writes /etc/docker/key.json and /var/run/docker/plugins whatever its roots
LEFTOVERS=(); for d in /etc/docker /var/run/docker; do [ -e "$d" ] || LEFTOVERS+=("$d"); done
DOCKERD_PID=
cleanup() {
  rc=$?
  set +e
  if [ -n "$DOCKERD_PID" ] && kill -0 "$DOCKERD_PID" 2>/dev/null; then
    [ -d "$WORK/ctx" ] && (cd "$WORK/ctx" && docker compose --profile tools --profile scale --profile scale-tools down -v --timeout 10 >/dev/null 2>&1)
    kill "$DOCKERD_PID"
    for _ in $(seq 1 40); do kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
    kill -0 "$DOCKERD_PID" 2>/dev/null && kill -9 "$DOCKERD_PID"
  fi
  # anything dockerd or debootstrap left mounted under $WORK, deepest first
  awk -v w="$WORK" 'index($2, w) == 1 {print $2}' /proc/mounts | sort -r | while read -r m; do umount "$m" || umount -l "$m"; done
  ip netns del "$NS" 2>/dev/null
  # `ip netns add` made /run/netns a mount point; undo that when it was not one before
  if [ "$NETNS_MOUNTED_BEFORE" = 0 ] && mountpoint -q /run/netns && [ -z "$(ip netns list)" ]; then umount /run/netns && rmdir /run/netns; fi
  [ ${#LEFTOVERS[@]} -gt 0 ] && rm -rf "${LEFTOVERS[@]}"
  if [ "$KEEP" = 1 ]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
  if [ $rc = 0 ]; then echo "PASS ($MODE) in $(( $(date +%s) - T_START ))s"; else echo "FAILED ($MODE, rc $rc) after $(( $(date +%s) - T_START ))s; KEEP=1 keeps $WORK and its dockerd.log" >&2; fi
  exit $rc
}
trap cleanup EXIT

# The Debian mirror apt already uses (deb822 or one-line sources).
MIRROR=$(sed -n 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' /etc/apt/sources.list.d/*.sources 2>/dev/null | grep -v security | head -n1)
[ -n "$MIRROR" ] || MIRROR=$(awk '$1 == "deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
[ -n "$MIRROR" ] || die "no Debian mirror found in the apt sources"

step "install docker.io and debootstrap (bookworm), docker compose v2 and buildx (.debs from trixie)"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends docker.io debootstrap >/dev/null
# bookworm has only compose v1 (python); trixie's docker-compose 2.26 and docker-buildx 0.13
# depend on libc6 (>= 2.34) alone, so their .debs install on bookworm as they are.
if ! docker compose version >/dev/null 2>&1; then
  mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/cache/archives/partial" "$WORK/apt/sources" "$WORK/apt/debs"
  printf 'Types: deb\nURIs: %s\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
    "$MIRROR" > "$WORK/apt/sources/trixie.sources"
  A=(-o "Dir::State::Lists=$WORK/apt/lists" -o "Dir::Cache=$WORK/apt/cache" -o Dir::Etc::SourceList=/dev/null
     -o "Dir::Etc::SourceParts=$WORK/apt/sources" -o APT::Sandbox::User=root)
  apt-get "${A[@]}" update -qq
  (cd "$WORK/apt/debs" && apt-get "${A[@]}" download docker-compose docker-buildx >/dev/null)
  dpkg -i "$WORK"/apt/debs/*.deb >/dev/null
fi
docker compose version

step "start dockerd in network namespace $NS"
ip netns add "$NS"
ip netns exec "$NS" ip link set lo up
export DOCKER_HOST="unix://$WORK/docker.sock"
# nsenter --net only (not `ip netns exec`, which remounts /sys and hides the cgroup mounts);
# nice, so a build in a container yields to other work on the machine.
nohup nice -n 10 nsenter --net="/run/netns/$NS" dockerd \
  --host "$DOCKER_HOST" --data-root "$WORK/docker" --exec-root "$WORK/exec" --pidfile "$WORK/dockerd.pid" \
  --iptables=false --ip6tables=false --storage-driver=overlay2 >"$WORK/dockerd.log" 2>&1 &
DOCKERD_PID=$!
for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; kill -0 "$DOCKERD_PID" 2>/dev/null || break; sleep 0.5; done
docker info >/dev/null 2>&1 || { tail -n 20 "$WORK/dockerd.log"; die "dockerd did not start"; }
docker version --format 'engine {{.Server.Version}}, client {{.Client.Version}}'

step "base image debian:trixie-slim from $MIRROR (debootstrap minbase)"
mkdir -p "$WORK/debcache"
# btrfs-progs is in the base here, as build containers have no network for
# the Dockerfile's apt-get (which installs it where the base lacks it).
debootstrap --variant=minbase --include=btrfs-progs,passt,rsync,openssh-client --cache-dir="$WORK/debcache" trixie "$WORK/rootfs-debian" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
  || { tail -n 20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
rm -rf "$WORK"/rootfs-debian/var/lib/apt/lists/* "$WORK"/rootfs-debian/var/cache/apt/archives/*.deb
tar -C "$WORK/rootfs-debian" -c . | docker import - debian:trixie-slim >/dev/null
docker run --rm debian:trixie-slim sh -c 'echo "a container runs: Debian $(cat /etc/debian_version)"'

# The project, without target/ data/ .git (.dockerignore leaves them out anyway).
mkdir -p "$WORK/ctx"
tar -C "$PROJECT" --exclude=./target --exclude=./data --exclude=./.git -c . | tar -C "$WORK/ctx" -x

# Host-side clients (and, for MODE=prebuilt, the image's binaries): the names the Dockerfile copies.
BINS=$(grep -o 'target/release/[A-Za-z0-9_-]*' "$PROJECT/Dockerfile" | sed 's#target/release/##' | sort -u)
BIN="$PROJECT/target/release"
for b in $BINS; do
  if [ ! -x "$BIN/$b" ]; then
    step "release binaries missing in $BIN: cargo build --release --locked on the host"
    (cd "$WORK/ctx" && CARGO_TARGET_DIR="$WORK/target" nice cargo build --release --locked --bins)
    BIN="$WORK/target/release"
    break
  fi
done

if [ "$MODE" = prebuilt ]; then
  step "image wharf:latest from the Dockerfile's runtime stage + prebuilt binaries"
  mkdir -p "$WORK/prebuilt/bin"
  for b in $BINS; do cp "$BIN/$b" "$WORK/prebuilt/bin/"; done
  awk '/^FROM /{stage++} {line[NR]=$0; st[NR]=stage} END {for (i=1;i<=NR;i++) if (st[i]==stage) print line[i]}' \
      "$PROJECT/Dockerfile" | sed 's#^COPY --from=[^ ]* [^ ]* #COPY bin/ #' > "$WORK/prebuilt/Dockerfile"
  cat "$WORK/prebuilt/Dockerfile"
  docker build -q -t wharf:latest "$WORK/prebuilt"
  SIZE=$(docker image inspect wharf:latest --format '{{.Size}}')
  echo "image wharf:latest: $(( SIZE / 1048576 )) MiB"
  # Base system ~110 MiB + eight stripped binaries ~70 MiB; unstripped, they alone were 450 MiB.
  [ "$SIZE" -lt $(( 300 * 1048576 )) ] || die "the image is $(( SIZE / 1048576 )) MiB, over 300 MiB: are the release binaries stripped of debug info?"
  UP=(up -d --no-build --wait --wait-timeout 120)
fi

cd "$WORK/ctx"
dc() { docker compose -f "$WORK/ctx/docker-compose.yml" "$@"; }
step "docker compose config, then docker compose ${UP[*]}"
dc config -q
dc "${UP[@]}" || { dc ps; dc logs --tail 40 exec chat ftp ssh; die "the stack did not come up healthy (the logs above)"; }
dc ps
for s in ftp chat exec ssh; do
  h=$(docker inspect -f '{{.State.Health.Status}}' "$(dc ps -q "$s")")
  echo "$s: $h"; [ "$h" = healthy ] || die "$s is $h"
done

# Logs are read whole before grep: `grep -q` stops at the first match, and
# the writer's SIGPIPE would fail the pipeline under pipefail.
has() { local text; text=$("${@:2}" 2>&1); grep -q -- "$1" <<<"$text"; }
has "each user's own uid, sandboxed" dc logs exec || { dc logs exec; die "exec does not run commands sandboxed as each user's uid"; }

step "admin service: add alice and bob, with exec"
export WHARF_PASSWORD='correct horse battery'
for u in alice bob; do
  echo "$WHARF_PASSWORD" | dc run --rm -T admin user add "$u" --password-stdin --services ftp,chat,exec
done
has 1900000001 dc run --rm -T admin user show alice || die "alice has no uid of her own"

step "TLS: the certificate the daemons made, its fingerprint, a first connection"
FP=$(dc run --rm -T admin tls fingerprint)
echo "admin-cli tls fingerprint: $FP"
has "fingerprint $FP" dc logs ftp || { dc logs ftp; die "ftp does not serve the certificate admin-cli shows"; }
has "fingerprint $FP" dc logs chat || { dc logs chat; die "chat does not serve the certificate admin-cli shows"; }
dc exec -T ftp cat /var/lib/wharf/data/tls/server.crt > "$WORK/server.crt"
N=(nsenter --net="/run/netns/$NS")
mkdir -p "$WORK/client" "$WORK/home" && cd "$WORK/client"
export HOME="$WORK/home"
unset XDG_CONFIG_HOME WHARF_CA
echo "$WHARF_PASSWORD" | dc run --rm -T admin user add carol --password-stdin --services ftp
OUT=$("${N[@]}" timeout 30 "$BIN/wharf-ftp" --user carol ls 2>&1 </dev/null) && die "an unknown server was trusted off a terminal"
grep -q "$FP" <<<"$OUT" || die "the refusal does not show the fingerprint: $OUT"
"${N[@]}" timeout 30 "$BIN/wharf-ftp" --user carol --accept-new ls </dev/null
grep -q "127.0.0.1:2121 $FP" "$HOME/.config/wharf/known_servers" || die "the fingerprint was not pinned"
"${N[@]}" timeout 30 "$BIN/wharf-ftp" --user carol ls </dev/null || die "the pinned server was refused"
echo "first connection refused without --accept-new, pinned with it, trusted after"
export WHARF_CA="$WORK/server.crt"

step "clients from the host ($BIN) against the published ports on 127.0.0.1, over TLS (--ca)"
head -c 3000000 /dev/urandom > sample.bin
echo 'bob secret' > notes.txt
SUM=$(md5sum < sample.bin | cut -d' ' -f1)
ftp() { "${N[@]}" timeout 60 "$BIN/wharf-ftp" --user "$1" -q "${@:2}"; }
ex() { "${N[@]}" timeout 60 "$BIN/wharf-exec" --user "$1" -n -- "${@:2}"; }
ftp alice put sample.bin
ftp bob put notes.txt
ftp alice get sample.bin copy.bin
cmp sample.bin copy.bin && echo "ftp: put and get round trip, md5 $SUM"
"${N[@]}" timeout 30 "$BIN/wharf-chat" --user alice listen --room lobby --count 1 > listen.out &
LISTEN=$!
for _ in $(seq 1 20); do   # send until the listener (which may still be logging in) has seen one
  sleep 0.5; kill -0 $LISTEN 2>/dev/null || break
  "${N[@]}" timeout 10 "$BIN/wharf-chat" --user bob send --create --room lobby 'compose test'
done
wait $LISTEN || die "chat listener failed"
grep -q 'bob: compose test' listen.out || die "chat: nothing heard"
echo "chat: $(cat listen.out)"

step "standard FTP: FTPS with curl on the published port and passive range; plaintext refused"
"${N[@]}" timeout 60 curl -sS --ssl-reqd --cacert "$WORK/server.crt" --user "alice:$WHARF_PASSWORD" \
  -o ftps.bin ftp://127.0.0.1:2100/sample.bin || die "FTPS download failed"
cmp sample.bin ftps.bin || die "FTPS download differs"
"${N[@]}" timeout 60 curl -sS --ssl-reqd --cacert "$WORK/server.crt" --user "alice:$WHARF_PASSWORD" \
  -T notes.txt ftp://127.0.0.1:2100/from-ftps.txt || die "FTPS upload failed"
has 'bob secret' ex alice cat from-ftps.txt || die "the FTPS upload is not in alice's home"
if "${N[@]}" timeout 30 curl -sS --user "alice:$WHARF_PASSWORD" ftp://127.0.0.1:2100/ >/dev/null 2>&1; then
  die "a plaintext standard FTP login was accepted off loopback"
fi
LONG=$("${N[@]}" timeout 30 python3 -c '
import socket
s = socket.create_connection(("127.0.0.1", 2100), timeout=20)
f = s.makefile("rb")
f.readline()
s.sendall(b"NOOP " + b"a" * 100000)
print(f.readline().decode().strip())
') || die "the long-line probe failed"
[[ "$LONG" == "500 Command line longer than 8192 bytes"* ]] || die "a line past the cap got: $LONG"
echo "standard FTP: FTPS download and upload, md5 $SUM; plaintext refused; a 100 kB line refused ($LONG)"

step "exec: alice's own uid, her upload readable and writable by her commands"
OUT=$(ex alice 'id -u; pwd; md5sum sample.bin; test -w sample.bin && echo writable')
echo "$OUT"
[ "$(sed -n 1p <<<"$OUT")" = 1900000001 ] || die "exec: not alice's uid"
[ "$(sed -n 2p <<<"$OUT")" = /home/alice ] || die "exec: not at /home/alice"
grep -q "$SUM  sample.bin" <<<"$OUT" && grep -qx writable <<<"$OUT" || die "exec: alice cannot use her upload"

step "ssh: a key from admin-cli, the host key's fingerprint, a command, sftp, rsync and scp -O on the published port 2222"
ssh-keygen -q -t ed25519 -N '' -C compose-test -f "$WORK/client/id_compose"
dc run --rm -T admin user key add alice - < "$WORK/client/id_compose.pub"
HOSTFP=$(dc run --rm -T admin ssh fingerprint | grep -o 'SHA256:[A-Za-z0-9+/]*')
echo "admin-cli ssh fingerprint: $HOSTFP"
has "$HOSTFP" dc logs ssh || { dc logs ssh; die "the SSH door does not serve the host key admin-cli shows"; }
SO=(-F /dev/null -o UserKnownHostsFile="$WORK/client/known_hosts" -o StrictHostKeyChecking=accept-new
    -o IdentitiesOnly=yes -o BatchMode=yes -o IdentityAgent=none -o LogLevel=ERROR -i "$WORK/client/id_compose")
OUT=$("${N[@]}" timeout 60 ssh "${SO[@]}" -p 2222 alice@127.0.0.1 'id -u; pwd; md5sum sample.bin') \
  || { dc logs --tail 40 ssh; die "ssh: a command failed"; }
[ "$(sed -n 1p <<<"$OUT")" = 1900000001 ] && [ "$(sed -n 2p <<<"$OUT")" = /home/alice ] \
  && grep -q "$SUM  sample.bin" <<<"$OUT" || die "ssh: not alice's uid, home or file: $OUT"
ssh-keygen -lf "$WORK/client/known_hosts" | grep -q "$HOSTFP" || die "ssh: the host key ssh saw is not the one admin-cli shows"
echo "ssh: alice's uid in her home, by key; the host key is $HOSTFP"
printf 'put sample.bin over-sftp.bin\nget over-sftp.bin sftp-back.bin\n' \
  | "${N[@]}" timeout 60 sftp "${SO[@]}" -P 2222 -b - alice@127.0.0.1 >/dev/null || die "sftp failed"
cmp sample.bin sftp-back.bin || die "sftp: the file came back different"
mkdir -p tree/sub && cp sample.bin tree/ && echo leaf > tree/sub/leaf.txt
"${N[@]}" timeout 60 rsync -a -e "ssh ${SO[*]} -p 2222" tree/ alice@127.0.0.1:tree/ || die "rsync to the SSH door failed"
[ "$(ex alice 'md5sum tree/sample.bin; cat tree/sub/leaf.txt')" = "$(printf '%s  tree/sample.bin\nleaf' "$SUM")" ] \
  || die "rsync: the tree is not in alice's home"
"${N[@]}" timeout 60 scp -O "${SO[@]}" -P 2222 alice@127.0.0.1:over-sftp.bin scp-back.bin || die "scp -O failed"
cmp sample.bin scp-back.bin || die "scp -O: the file came back different"
if "${N[@]}" timeout 30 ssh "${SO[@]}" -p 2222 alice@127.0.0.1 "cat /var/lib/wharf/data/homes/bob/notes.txt" >/dev/null 2>&1; then
  die "a command over ssh read bob's file"
fi
echo "sftp put and get, rsync of a tree, scp -O: byte-identical; bob's file out of reach"
ex alice 'rm -rf tree over-sftp.bin'   # the quota steps below count on alice's home as it was

step "exec: alice attacks bob, the database, the data volume and the server"
DATA=/var/lib/wharf/data
for attack in \
  "cat $DATA/homes/bob/notes.txt" "ls $DATA/homes/bob" "echo x > $DATA/homes/bob/planted" \
  "mv $DATA/homes/bob/notes.txt $DATA/homes/bob/moved" "cat ../bob/notes.txt" "ls /home/bob" \
  "cat $DATA/wharf.db" "echo x >> $DATA/wharf.db" "ls $DATA" "ls $DATA/homes" \
  "cat $DATA/tls/server.key" "kill -9 1" "echo hi > /dev/tty" "cat /proc/1/environ"; do
  if ex alice "$attack" >/dev/null 2>&1; then die "alice's attack worked: $attack"; fi
  echo "refused: $attack"
done
[ "$(ex bob 'cat notes.txt; ls')" = "$(printf 'bob secret\nnotes.txt')" ] || die "bob's home was touched"
echo "bob's home is as he left it; the server still serves"

step "exec: what a command reaches of its container and the stack (--exec-network none)"
EXEC_ID=$(dc ps -q exec)
FTP_IP=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' "$(dc ps -q ftp)")
# Sockets of the exec container's own: 0666, by path in /tmp and /dev/shm,
# and one in the abstract namespace; each answers HOST.
docker exec -d "$EXEC_ID" perl -MIO::Socket::UNIX -e '
  my @l = map { my $s = IO::Socket::UNIX->new(Local => $_, Listen => 5) or die "$_: $!"; chmod 0666, $_; $s }
    "/tmp/host.sock", "/dev/shm/host.sock";
  push @l, IO::Socket::UNIX->new(Local => "\0wharf-host", Listen => 5) or die "abstract: $!";
  while (1) { for (@l) { $_->blocking(0); my $c = $_->accept; print $c "HOST\n" if $c } select(undef, undef, undef, 0.05) }'
sleep 1
has HOST docker exec "$EXEC_ID" perl -MIO::Socket::UNIX -e 'print readline(IO::Socket::UNIX->new(Peer => "/tmp/host.sock"))' \
  || die "the test's socket in the exec container does not answer"
for target in 127.0.0.1/9100 127.0.0.1/2123 "$FTP_IP/2121" "$FTP_IP/9100"; do
  if ex alice "exec 3<>/dev/tcp/$target" >/dev/null 2>&1; then die "a command reached $target"; fi
  echo "unreachable: $target"
done
for peer in /tmp/host.sock /dev/shm/host.sock abstract; do
  if [ "$peer" = abstract ]; then to='"\0wharf-host"'; else to="\"$peer\""; fi
  OUT=$(ex alice "perl -MIO::Socket::UNIX -e 'print readline(IO::Socket::UNIX->new(Peer => $to) or die qq(no: \$!\n))'" 2>&1) || true
  grep -q HOST <<<"$OUT" && die "a command reached the container's socket $peer"
  echo "unreachable: $peer ($OUT)"
done
OUT=$(ex alice 'cat /proc/self/mountinfo')
POINTS=$(awk '{print $5}' <<<"$OUT")
grep -qE '^/(var|srv|mnt|root|run/|data)' <<<"$POINTS" && { echo "$OUT"; die "the mount table shows the container's places"; }
has /var/lib/wharf ex alice mount && die "mount shows the data folder's path"
echo "mount points a command sees: $(tr '\n' ' ' <<<"$POINTS")"

step "exec: nothing outlives a run (setsid, setsid -f, nohup, an orphan), the memory cap, the quota"
ex alice '(sleep 1234.1 &); setsid sleep 1234.2 & setsid -f sleep 1234.3; nohup sleep 1234.4 >/dev/null 2>&1 & echo started'
sleep 1
if docker top "$(dc ps -q exec)" -eo pid,args | grep -q 'sleep 1234'; then
  docker top "$(dc ps -q exec)" -eo pid,args; die "processes outlived their run"
fi
echo "no process left in the exec container"
for _ in $(seq 20); do ex alice true; done
sleep 1
Z=$(docker top "$(dc ps -q exec)" -eo stat,pid,args | awk '$1 ~ /^Z/' | wc -l)
[ "$Z" = 0 ] || { docker top "$(dc ps -q exec)" -eo stat,pid,ppid,args; die "$Z exited processes are left unreaped in the exec container"; }
echo "20 more commands: no zombie left in the exec container"
ex alice 'timeout 4 sh -c "f() { f | f & }; f; sleep 1234.5"; echo bomb over' > bomb.out 2>&1 &
BOMB=$!
sleep 1
[ "$(ex bob 'echo bob is fine')" = "bob is fine" ] || die "alice's fork bomb stopped bob's command"
wait $BOMB || true
grep -q 'bomb over' bomb.out || die "the fork bomb's run did not end: $(tail -3 bomb.out)"
sleep 1
if docker top "$(dc ps -q exec)" -eo uid,pid,args | awk '$1 == 1900000001' | grep -q .; then
  docker top "$(dc ps -q exec)" -eo uid,pid,args | head; die "processes of alice left after the fork bomb"
fi
echo "a fork bomb by alice: bob's command ran, and nothing of alice's is left"
ERR=$(ex alice "awk 'BEGIN { s = \"x\"; while (1) s = s s }'" 2>&1) && die "memory: no limit"
grep -q 'out of memory' <<<"$ERR" || die "memory: $ERR"
echo "memory: $ERR" | head -1
dc run --rm -T admin quota set alice 8MiB
ERR=$(ex alice 'for i in 1 2 3 4 5 6; do head -c 2M /dev/zero > f$i; done; sleep 30' 2>&1) && die "quota: not stopped"
grep -q 'quota' <<<"$ERR" || die "quota: $ERR"
echo "quota: $ERR"
OUT=$(ex alice 'head -c 1 /dev/zero > more; echo $?; rm -f f1 f2 f3 f4 f5 f6 more')
[ "$OUT" = 153 ] || die "quota: a command over quota could write ($OUT)"
echo "quota: over quota, a new command cannot write"
cd "$WORK/ctx"

step "where the kernel cannot confine: the image run as its unprivileged user, Docker's default seccomp"
OUT=$(docker run --rm --network none wharf:latest wharf-execd --listen 127.0.0.1:2123 2>&1) && die "exec served unconfined"
echo "$OUT" | tail -1
grep -q 'the sandbox is incomplete: creating user, mount and PID namespaces' <<<"$OUT" || die "exec did not say what is missing"
docker run -d --name wharfd-probe --network none wharf:latest wharfd >/dev/null
for _ in $(seq 1 20); do has '^ready' docker logs wharfd-probe && break; sleep 0.5; done
docker logs wharfd-probe 2>&1 | grep -E '^(exec is OFF|  (ftp|chat) )' | tee probe.out
grep -q 'exec is OFF: .*namespaces' probe.out && grep -q '^  ftp' probe.out && grep -q '^  chat' probe.out \
  || { docker logs wharfd-probe; die "wharfd did not serve ftp and chat with exec off"; }
docker rm -fv wharfd-probe >/dev/null
docker run -d --name execd-probe --network none wharf:latest wharf-execd --allow-unconfined-exec >/dev/null
for _ in $(seq 1 20); do has 'serving remote exec' docker logs execd-probe && break; sleep 0.5; done
has 'serving remote exec.*UNCONFINED' docker logs execd-probe || { docker logs execd-probe; die "--allow-unconfined-exec"; }
echo "with --allow-unconfined-exec it serves, and says UNCONFINED"
docker rm -fv execd-probe >/dev/null

step "profile scale: images for PostgreSQL and HAProxy from Debian's archive"
# Build containers reach no network here: the packages go into a base made
# with debootstrap, and the Dockerfiles find them installed.
debootstrap --variant=minbase --include=postgresql,haproxy --cache-dir="$WORK/debcache" trixie "$WORK/rootfs-scale" "$MIRROR" \
  >"$WORK/debootstrap-scale.log" 2>&1 || { tail -n 20 "$WORK/debootstrap-scale.log"; die "debootstrap (scale) failed"; }
rm -rf "$WORK"/rootfs-scale/var/lib/apt/lists/* "$WORK"/rootfs-scale/var/cache/apt/archives/*.deb "$WORK"/rootfs-scale/var/lib/postgresql/*
tar -C "$WORK/rootfs-scale" -c . | docker import - wharf-scale-base:latest >/dev/null
rm -rf "$WORK/rootfs-scale"
docker build -q --build-arg BASE=wharf-scale-base:latest -t wharf-postgres:latest -f deploy/scale/postgres.Dockerfile deploy/scale
docker build -q --build-arg BASE=wharf-scale-base:latest -t wharf-haproxy:latest -f deploy/scale/haproxy.Dockerfile deploy/scale

step "profile scale: PostgreSQL, two replicas on one volume, HAProxy in front"
dc --profile scale up -d --no-build --wait --wait-timeout 180 balancer
dc --profile scale ps -a
scale_logs() { dc --profile scale ps -a; dc --profile scale logs --tail 40 balancer replica-1 replica-2 postgres; }
for s in postgres replica-1 replica-2; do
  h=$(docker inspect -f '{{.State.Health.Status}}' "$(dc --profile scale ps -q "$s")")
  echo "$s: $h"; [ "$h" = healthy ] || die "$s is $h"
done
has 'shared through PostgreSQL' dc --profile scale logs replica-1 || { dc --profile scale logs replica-1; die "replica-1 does not share chat rooms"; }
if has 'wharf:[0-9a-f]\{16\}' dc --profile scale logs; then die "the database password is in a log"; fi
if grep -q "$(dc --profile scale exec -T replica-1 cat /run/wharf-db/password)" docker-compose.yml; then die "the password is in the compose file"; fi
SFP1=$(dc --profile scale logs replica-1 2>&1 | grep -o 'fingerprint [0-9A-Fa-f:]*' | head -n1)
SFP2=$(dc --profile scale logs replica-2 2>&1 | grep -o 'fingerprint [0-9A-Fa-f:]*' | head -n1)
[ -n "$SFP1" ] && [ "$SFP1" = "$SFP2" ] || die "the replicas serve different certificates ($SFP1 / $SFP2)"
echo "both replicas serve one certificate: $SFP1"
sa() { dc --profile scale-tools run --rm -T scale-admin "$@"; }
for u in alice bob; do
  echo "$WHARF_PASSWORD" | sa user add "$u" --password-stdin --services ftp,chat,exec
done
USERS=$(dc --profile scale exec -T -u postgres postgres psql -d wharf -Atc 'SELECT name FROM users ORDER BY name' | tr '\n' ' ')
[ "$USERS" = "alice bob " ] || die "the users are not in PostgreSQL: $USERS"
echo "users in PostgreSQL: $USERS"
dc --profile scale exec -T replica-1 cat /var/lib/wharf/data/tls/server.crt > "$WORK/scale.crt"
export WHARF_CA="$WORK/scale.crt"
cd "$WORK/client"
sftp() { "${N[@]}" timeout 60 "$BIN/wharf-ftp" --server 127.0.0.1:2221 --user "$1" -q "${@:2}"; }
schat() { "${N[@]}" timeout 30 "$BIN/wharf-chat" --server 127.0.0.1:2224 --user "$@"; }
sftp alice put sample.bin scaled.bin || { scale_logs; die "upload through the balancer failed"; }
for i in 1 2 3 4; do sftp alice get scaled.bin "back$i.bin"; cmp sample.bin "back$i.bin" || die "download $i through the balancer differs"; done
echo "files through the balancer: put once, got back four times, md5 $SUM"
OUT=$("${N[@]}" timeout 60 "$BIN/wharf-exec" --server 127.0.0.1:2223 --user alice -n -- 'id -u; md5sum scaled.bin')
grep -q "$SUM  scaled.bin" <<<"$OUT" || die "exec through the balancer: $OUT"
echo "exec through the balancer sees the upload: $(tail -n1 <<<"$OUT")"
sa user key add alice - < "$WORK/client/id_compose.pub"
SSO=(-F /dev/null -o UserKnownHostsFile="$WORK/client/scale_known_hosts" -o StrictHostKeyChecking=accept-new
     -o IdentitiesOnly=yes -o BatchMode=yes -o IdentityAgent=none -o LogLevel=ERROR -i "$WORK/client/id_compose")
for i in 1 2 3 4; do
  OUT=$("${N[@]}" timeout 60 ssh "${SSO[@]}" -p 2220 alice@127.0.0.1 'md5sum scaled.bin') || { scale_logs; die "ssh through the balancer failed"; }
  grep -q "$SUM  scaled.bin" <<<"$OUT" || die "ssh through the balancer: $OUT"
done
[ "$(wc -l < "$WORK/client/scale_known_hosts")" = 1 ] || die "the replicas serve different SSH host keys"
echo "ssh through the balancer, four times: one host key, the upload seen"
# A listener on each replica (inside its container, straight to it), the
# messages said through the balancer and straight to each replica.
for r in 1 2; do
  dc --profile scale exec -T -e WHARF_PASSWORD replica-$r timeout 30 wharf-chat --ca /var/lib/wharf/data/tls/server.crt \
    --user alice listen --room lobby > "listen-$r.out" 2>&1 &
done
heard() { grep -l -- "$1" listen-1.out listen-2.out 2>/dev/null | wc -l; }
for _ in $(seq 1 40); do
  schat bob send --room lobby 'probe' >/dev/null 2>&1 || true
  [ "$(heard 'bob: probe')" = 2 ] && break; sleep 0.5
done
[ "$(heard 'bob: probe')" = 2 ] || { cat listen-1.out listen-2.out; die "the listeners on both replicas did not hear a probe"; }
for r in 1 2; do
  dc --profile scale exec -T -e WHARF_PASSWORD replica-$r wharf-chat --ca /var/lib/wharf/data/tls/server.crt \
    --user bob send --create --room lobby "said on replica $r"
done
for _ in $(seq 1 20); do
  [ "$(heard 'bob: said on replica 1')" = 2 ] && [ "$(heard 'bob: said on replica 2')" = 2 ] && break; sleep 0.5
done
[ "$(heard 'bob: said on replica 1')" = 2 ] && [ "$(heard 'bob: said on replica 2')" = 2 ] \
  || { cat listen-1.out listen-2.out; die "a listener missed a message said on the other replica"; }
for r in 1 2; do
  [ "$(grep -c 'said on replica' "listen-$r.out")" = 2 ] || { cat "listen-$r.out"; die "a message came twice to replica $r's listener"; }
done
echo "chat: a listener on each replica heard what was said on both, once"
schat bob --udp send --create --room lobby 'over UDP' || die "chat over UDP through the balancer failed"
HIST=$(dc --profile scale exec -T -u postgres postgres psql -d wharf -Atc "SELECT string_agg(seq::text, ',' ORDER BY seq) FROM chat_messages WHERE room = 'lobby'")
echo "room lobby, numbered in PostgreSQL: $HIST"
grep -q 'over UDP' <<<"$(dc --profile scale exec -T -u postgres postgres psql -d wharf -Atc "SELECT body FROM chat_messages WHERE room = 'lobby'")" \
  || die "the message over UDP is not in the history"
N_SEQ=$(tr ',' '\n' <<<"$HIST" | wc -l)
[ "$HIST" = "$(seq -s, 1 "$N_SEQ")" ] || die "the room's numbers have gaps or repeats: $HIST"
echo "chat over UDP through the balancer (datagrams to the granting replica's own port); the room numbered 1..$N_SEQ"
# A stranger's wrong passwords: penalised as the client, never as the balancer.
for _ in 1 2 3; do WHARF_PASSWORD=wrong "${N[@]}" timeout 20 "$BIN/wharf-ftp" --server 127.0.0.1:2221 --user alice ls >/dev/null 2>&1 || true; done
LOGS=$(dc --profile scale logs replica-1 replica-2 2>&1)
grep -q 'login refused' <<<"$LOGS" || die "no refused login in the logs"
if grep 'login refused' <<<"$LOGS" | grep -q 'peer=172.30.77.10:'; then die "a login was counted against the balancer's address"; fi
echo "refused logins are counted against $(grep 'login refused' <<<"$LOGS" | grep -o 'peer=[0-9.]*' | sort -u | tr '\n' ' ')(not the balancer)"
# One replica stops: the other serves through the balancer.
dc --profile scale stop replica-1
sftp alice get scaled.bin after-stop.bin && cmp sample.bin after-stop.bin || die "the balancer did not move to the remaining replica"
echo "replica-1 stopped: files still served through the balancer"
dc --profile scale start replica-1
cd "$WORK/ctx"

step "docker compose down -v"
dc --profile scale --profile scale-tools down -v
dc --profile tools down -v
[ -z "$(docker ps -aq)" ] && [ -z "$(docker volume ls -q)" ] \
  || { docker ps -a; docker volume ls; die "containers or volumes left after down -v"; }

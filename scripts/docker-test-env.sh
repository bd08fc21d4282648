#!/usr/bin/env bash
# A private Docker Engine for the DockerSandbox tests and benchmark, independent of any system
# dockerd: its own data root, exec root, pid file and socket, no networking setup (no iptables, no
# bridge), and a test image built without a registry (a busybox-static root file system imported
# with `docker import`).
#
#   bash scripts/docker-test-env.sh start   # prints the socket path on stdout (last line)
#   bash scripts/docker-test-env.sh stop
#   bash scripts/docker-test-env.sh status
#
# Idempotent: `start` reuses a daemon that is already answering and an image that already exists.
# Loud on failure: any missing piece exits non-zero with the reason and the daemon's log tail.
# Environment: SANDBOX_SSH_DOCKER_DIR (default /tmp/sandbox-ssh-docker), SANDBOX_SSH_DOCKER_IMAGE
# (default sandbox-ssh-test:busybox).
set -euo pipefail

base="${SANDBOX_SSH_DOCKER_DIR:-/tmp/sandbox-ssh-docker}"
image="${SANDBOX_SSH_DOCKER_IMAGE:-sandbox-ssh-test:busybox}"
socket="$base/docker.sock"
pidfile="$base/dockerd.pid"
log="$base/dockerd.log"
# the Debian CLI matches the Debian daemon; any docker CLI negotiates the API version anyway
docker_cli() { "$(command -v /usr/bin/docker || command -v docker)" -H "unix://$socket" "$@"; }

fail() {
  echo "docker-test-env: error: $*" >&2
  if [ -f "$log" ]; then
    echo "---- last lines of $log ----" >&2
    tail -n 30 "$log" >&2 || true
  fi
  exit 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null 2>&1; then sudo "$@"; else
    fail "need root (or sudo) for: $*"
  fi
}

install_packages() {
  local need=()
  [ -x /usr/sbin/dockerd ] || command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
  [ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
  # busybox (dynamic) would not run inside an image without a libc
  if ! dpkg -s busybox-static >/dev/null 2>&1; then need+=(busybox-static); fi
  if [ ${#need[@]} -gt 0 ]; then
    echo "docker-test-env: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -qq >&2 || fail "apt-get update failed"
    as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 || fail "apt-get install ${need[*]} failed"
  fi
}

alive() { [ -S "$socket" ] && docker_cli version --format '{{.Server.Version}}' >/dev/null 2>&1; }

start_daemon() {
  if alive; then return 0; fi
  mkdir -p "$base"
  # a stale daemon of ours (socket gone or not answering): end it by its pid file
  if [ -f "$pidfile" ]; then
    local old
    old="$(cat "$pidfile" 2>/dev/null || true)"
    if [ -n "$old" ] && kill -0 "$old" 2>/dev/null; then
      kill "$old" 2>/dev/null || true
      for _ in $(seq 1 100); do kill -0 "$old" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$pidfile"
  fi
  rm -f "$socket"
  echo "docker-test-env: starting dockerd on $socket" >&2
  # setsid: the daemon outlives this script (stop ends it by pid file)
  as_root setsid /usr/sbin/dockerd \
    --data-root "$base/data" \
    --exec-root "$base/exec" \
    --pidfile "$pidfile" \
    -H "unix://$socket" \
    --iptables=false --ip6tables=false --bridge=none --ip-forward=false --ip-masq=false \
    --containerd-namespace sandbox-ssh-test --containerd-plugins-namespace sandbox-ssh-test-plugins \
    --log-level warn \
    >"$log" 2>&1 </dev/null &
  for _ in $(seq 1 300); do
    if alive; then
      # tests run as the invoking user; the socket is root's by default
      chmod 0660 "$socket" 2>/dev/null || true
      return 0
    fi
    if [ -f "$pidfile" ] && ! kill -0 "$(cat "$pidfile")" 2>/dev/null; then fail "dockerd exited during start"; fi
    sleep 0.1
  done
  fail "dockerd did not answer on $socket within 30 s"
}

build_image() {
  if docker_cli image inspect "$image" >/dev/null 2>&1; then return 0; fi
  local busybox tree
  busybox="$(command -v /bin/busybox || command -v busybox)"
  file -L "$busybox" 2>/dev/null | grep -q "statically linked" || [ -x /bin/busybox ] || fail "no static busybox"
  tree="$(mktemp -d "$base/rootfs.XXXXXX")"
  mkdir -p "$tree"/{bin,sbin,usr/bin,usr/sbin,etc,tmp,root,home,proc,sys,dev,var/tmp}
  chmod 1777 "$tree/tmp" "$tree/var/tmp"
  chmod 0700 "$tree/root"
  cp "$busybox" "$tree/bin/busybox"
  # one link per applet at the path busybox itself reports
  local applet
  while read -r applet; do
    [ -e "$tree/$applet" ] || ln -s /bin/busybox "$tree/$applet"
  done < <("$busybox" --list-full)
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/home:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\n' >"$tree/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\nuser:x:1000:\n' >"$tree/etc/group"
  mkdir -p "$tree/home/user" && chown 1000:1000 "$tree/home/user"
  echo "sandbox" >"$tree/etc/hostname"
  echo "docker-test-env: importing $image" >&2
  tar -C "$tree" -c . | docker_cli import \
    --change 'CMD ["/bin/sh"]' --change 'ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin' - "$image" >&2 \
    || { rm -rf "$tree"; fail "docker import failed"; }
  rm -rf "$tree"
  docker_cli image inspect "$image" >/dev/null 2>&1 || fail "image $image missing after import"
}

stop_daemon() {
  if [ ! -f "$pidfile" ]; then
    echo "docker-test-env: not running" >&2
    return 0
  fi
  local pid
  pid="$(cat "$pidfile")"
  if kill -0 "$pid" 2>/dev/null; then
    # containers first, so that no shim outlives the daemon
    if alive; then
      local ids
      ids="$(docker_cli ps -aq 2>/dev/null || true)"
      [ -z "$ids" ] || docker_cli rm -f $ids >/dev/null 2>&1 || true
    fi
    as_root kill "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "docker-test-env: dockerd $pid did not stop in 15 s; killing it" >&2
      as_root kill -9 "$pid" || true
    fi
  fi
  rm -f "$pidfile" "$socket"
  echo "docker-test-env: stopped" >&2
}

case "${1:-start}" in
  start)
    install_packages
    start_daemon
    build_image
    echo "$socket"
    ;;
  stop) stop_daemon ;;
  status)
    if alive; then echo "running: $socket"; else echo "not running"; exit 1; fi
    ;;
  *)
    echo "usage: $0 start|stop|status" >&2
    exit 2
    ;;
esac

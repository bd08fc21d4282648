#!/usr/bin/env bash
# Installs the system packages the tests and benchmarks use (Debian/Ubuntu), only when one is
# missing: bubblewrap (isolated local sandbox), OpenSSH client and server (real peers, benchmark
# anchor), tmux (a real terminal), rsync, procps. Idempotent; fails loudly rather than letting a
# test skip because a tool is absent.
set -euo pipefail

need=()
check() { # binary package
  if ! command -v "$1" >/dev/null 2>&1 && [ ! -x "$1" ]; then need+=("$2"); fi
}
check bwrap bubblewrap
check ssh openssh-client
check sftp openssh-client
check scp openssh-client
check ssh-keygen openssh-client
check /usr/sbin/sshd openssh-server
check /usr/lib/openssh/sftp-server openssh-sftp-server
check tmux tmux
check rsync rsync
check ps procps
check nsenter util-linux
check setpriv util-linux

if [ ${#need[@]} -eq 0 ]; then
  echo "system packages: all present"
  exit 0
fi

# shellcheck disable=SC2207
pkgs=($(printf '%s\n' "${need[@]}" | sort -u))
echo "system packages: installing ${pkgs[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "error: need root (or sudo) to install: ${pkgs[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null
echo "system packages: installed ${pkgs[*]}"

#!/usr/bin/env bash
# The DockerSandbox suite against a private Docker Engine: start it (installing docker.io and
# busybox-static when missing, importing the busybox test image), run test/docker, stop it.
# Fails loudly when the engine cannot start; never skips. Extra arguments go to vitest.
set -euo pipefail
cd "$(dirname "$0")/.."

env_script="scripts/docker-test-env.sh"
socket="$(bash "$env_script" start | tail -n 1)"
if [ ! -S "$socket" ]; then
  echo "test-docker: error: the Docker engine did not start (no socket at '$socket')" >&2
  exit 1
fi
trap 'bash "$env_script" stop' EXIT

export SANDBOX_SSH_DOCKER_SOCKET="$socket"
npx vitest run test/docker "$@"

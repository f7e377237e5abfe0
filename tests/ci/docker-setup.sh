#!/usr/bin/env bash
# Make a Docker engine and the test image ready for tests/test_runner_docker.py.
#
# Called by .ci/run (as root, on a fresh Debian machine) before the tests,
# and safe to run again at any time: each step checks first and says what it
# did or why it had nothing to do.
#
#   1. an engine: if `docker info` already answers (a running dockerd, or
#      DOCKER_HOST pointing at one), it is used as it is. Otherwise docker.io
#      is installed when dockerd is missing, and dockerd is started in the
#      background (log: $ORCHESTRA_DOCKERD_LOG), then waited for, at most
#      $ORCHESTRA_DOCKER_WAIT seconds. Extra dockerd flags (e.g.
#      --storage-driver=vfs where overlayfs cannot nest) go in
#      $ORCHESTRA_DOCKERD_ARGS.
#   2. the test image orchestra-test/busybox:latest, if missing: CI reaches no
#      registry, so it is imported from a root file system holding only the
#      static busybox (package busybox-static, installed when missing) and a
#      link per applet (sh, echo, sleep, seq, cat, env, ...).
#
# dockerd keeps running after this script; stop it with: kill "$(cat /var/run/docker.pid)".
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1

IMAGE=orchestra-test/busybox:latest
WAIT=${ORCHESTRA_DOCKER_WAIT:-60}
LOG=${ORCHESTRA_DOCKERD_LOG:-/tmp/orchestra-dockerd.log}
PIDFILE=/var/run/docker.pid

ROOTFS=""
trap 'rm -rf "${ROOTFS:-/nonexistent}"' EXIT

say() { echo "docker-setup: $*"; }

engine_up() { docker info >/dev/null 2>&1; }

package_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

install_packages() {
  say "installing $*"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

start_dockerd() {
  if [[ -f $PIDFILE ]] && ! kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    say "removing the stale $PIDFILE of a dockerd that is gone"
    rm -f "$PIDFILE"
  fi
  if [[ -f $PIDFILE ]]; then
    say "dockerd (pid $(cat "$PIDFILE")) is running but not answering yet"
  else
    # shellcheck disable=SC2086  # the extra flags are meant to split into words
    setsid nohup dockerd ${ORCHESTRA_DOCKERD_ARGS:-} >"$LOG" 2>&1 </dev/null &
    say "started dockerd (pid $!), logging to $LOG"
  fi
  local waited=0
  until engine_up; do
    if ((waited >= WAIT)); then
      say "dockerd did not answer within ${WAIT}s; the end of $LOG:"
      tail -n 30 "$LOG" >&2 || true
      exit 1
    fi
    sleep 1
    waited=$((waited + 1))
  done
  say "the engine answers after ${waited}s"
}

ensure_engine() {
  if engine_up; then
    say "a Docker engine already answers ($(docker version -f '{{.Server.Version}}' 2>/dev/null || echo '?')); nothing to start"
    return
  fi
  if ! command -v dockerd >/dev/null 2>&1; then
    install_packages docker.io
  else
    say "dockerd is installed"
  fi
  start_dockerd
}

build_image() {
  if docker image inspect "$IMAGE" >/dev/null 2>&1; then
    say "the test image $IMAGE is present; nothing to build"
    return
  fi
  if ! package_installed busybox-static; then
    install_packages busybox-static
  fi
  ROOTFS=$(mktemp -d /tmp/orchestra-busybox-root.XXXXXX)
  local root=$ROOTFS
  mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  local applet
  for applet in $("$root/bin/busybox" --list); do
    [[ -e $root/bin/$applet ]] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/sh\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  tar -C "$root" -c . | docker import \
    -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' \
    -c 'LABEL org.opencontainers.image.description="orchestra test image: static busybox only"' \
    - "$IMAGE" >/dev/null
  say "built the test image $IMAGE from $(readlink -f /bin/busybox) ($(find "$root/bin" -mindepth 1 | wc -l) commands)"
  rm -rf "$root"
}

ensure_engine
build_image
docker run --rm "$IMAGE" true
say "ready: 'docker run --rm $IMAGE true' works"

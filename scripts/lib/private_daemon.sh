# Sourced by scripts that need a private atolld: a temporary socket and repository, the cpu backend
# and the accelerators of a build folder, and an explicit empty configuration so that a system-wide
# /etc/atoll/atolld.json cannot change what runs.
#
#   private_daemon_start BUILD_DIR STATE_DIR "ACCELERATOR..." [ATOLLD_ARG...]
#     installs each accelerator folder of BUILD_DIR/accelerators, starts atolld, waits until it
#     listens, and exports ATOLL_SOCKET, ATOLL_REPOSITORY and PRIVATE_DAEMON_PID.
#     Its log is STATE_DIR/atolld.log. Returns non-zero (after printing the log) if it fails.
#   private_daemon_stop
#     SIGTERM and wait; safe to call twice or when the daemon never started.

private_daemon_start() {
  local build=$1 state=$2 accelerators=$3
  shift 3
  export ATOLL_SOCKET=$state/atolld.sock
  export ATOLL_REPOSITORY=$state/repository
  PRIVATE_DAEMON_PID=
  local a
  for a in $accelerators; do
    "$build/bin/atoll" install "$build/accelerators/$a" >/dev/null || return 1
  done
  echo '{}' >"$state/atolld.json"
  "$build/bin/atolld" --config "$state/atolld.json" --socket "$ATOLL_SOCKET" \
    --repository "$ATOLL_REPOSITORY" --backend-dir "$build/lib/atoll/backends" "$@" \
    </dev/null >"$state/atolld.log" 2>&1 &
  PRIVATE_DAEMON_PID=$!
  export PRIVATE_DAEMON_PID
  local _
  for _ in $(seq 200); do
    [ -S "$ATOLL_SOCKET" ] && return 0
    if ! kill -0 "$PRIVATE_DAEMON_PID" 2>/dev/null; then
      echo "atolld exited at start:" >&2
      cat "$state/atolld.log" >&2
      PRIVATE_DAEMON_PID=
      return 1
    fi
    sleep 0.05
  done
  echo "atolld did not listen on $ATOLL_SOCKET within 10 s" >&2
  return 1
}

private_daemon_stop() {
  if [ -n "${PRIVATE_DAEMON_PID:-}" ] && kill -0 "$PRIVATE_DAEMON_PID" 2>/dev/null; then
    kill -TERM "$PRIVATE_DAEMON_PID" 2>/dev/null || true
    wait "$PRIVATE_DAEMON_PID" 2>/dev/null || true
  fi
  PRIVATE_DAEMON_PID=
}

# shellcheck shell=bash
# Sourced by the scripts that run a bundle from scripts/gpu/pack.sh on a GPU host.
# bundle_enter ROOT BUNDLE_DIR: checks the bundle, sets `bundle` (absolute) and `build` (the path
# its binaries were built at), recreates the build and source trees at those absolute paths (the
# test binaries name files by them) and puts the bundle's libraries on LD_LIBRARY_PATH.
bundle_enter() {
  local root=$1
  bundle=$2
  [ -f "$bundle/build-path" ] || { echo "$0: '$bundle' is not a bundle from scripts/gpu/pack.sh" >&2; exit 2; }
  bundle=$(cd "$bundle" && pwd)
  build=$(cat "$bundle/build-path")
  local source
  source=$(cat "$bundle/source-path")
  if [ "$source" != "$root" ] && [ ! -e "$source" ]; then
    mkdir -p "$(dirname "$source")"
    ln -s "$root" "$source"
  fi
  if [ ! -e "$build" ]; then
    mkdir -p "$(dirname "$build")"
    ln -s "$bundle/build" "$build"
  fi
  export LD_LIBRARY_PATH="$bundle/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
}

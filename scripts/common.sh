# shellcheck shell=bash disable=SC2154  # $script is set by the script that sources this file
# Functions the scripts here share; sourced, never run on its own. Each message starts with the
# calling script's name ($script, set by the script before it sources this file).

# install_packages PACKAGE...: apt-get installs those of the Debian packages not yet installed
# (through sudo when not root); quiet, and silent when every one is there.
install_packages() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "$script: installing ${missing[*]}"
  local sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  export DEBIAN_FRONTEND=noninteractive
  $sudo_cmd apt-get update -qq
  $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# configure_once DIR COMMAND...: runs the configure COMMAND (cmake -S ... -B DIR ...) when DIR
# has no build files yet (a configure that failed leaves a cache but none); its output goes to
# DIR/build.log, shown whole when it fails.
configure_once() {
  local dir=$1
  shift
  mkdir -p "$dir"
  [ -f "$dir/Makefile" ] && return 0
  "$@" >"$dir/build.log" 2>&1 || { cat "$dir/build.log"; exit 1; }
}

# build_quietly DIR [cmake --build ARGS...]: builds DIR; quiet when all goes well, the whole log
# (DIR/build.log) when something fails.
build_quietly() {
  local dir=$1
  shift
  if ! cmake --build "$dir" "$@" >"$dir/build.log" 2>&1; then
    cat "$dir/build.log"
    echo "$script: build failed (log: $dir/build.log)" >&2
    exit 1
  fi
}

# shellcheck shell=bash
# Sourced by tests/run.sh and tests/demo.sh: collects the Debian packages they lack, then
# installs them in one apt run.
#   need COMMAND PACKAGE   PACKAGE is missing if COMMAND is not in PATH
#   need_pkg PACKAGE       PACKAGE is missing if dpkg does not have it installed
#   install_missing
missing=()
need() { command -v "$1" >/dev/null 2>&1 || missing+=("$2"); }
need_pkg() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'ok installed' || missing+=("$1"); }

install_missing() {
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "== installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Debian 11 had dbus-daemon inside the dbus package.
  if [[ " ${missing[*]} " == *" dbus-daemon "* ]] && ! apt-cache show dbus-daemon >/dev/null 2>&1; then
    missing=("${missing[@]/#dbus-daemon/dbus}")
  fi
  # --no-install-recommends: qemu-system-x86 recommends qemu-block-extra, which is tied to
  # the distribution's QEMU version and would make apt remove a newer qemu-utils (backports).
  apt-get install -y -q --no-install-recommends "${missing[@]}"
}

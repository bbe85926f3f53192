# shellcheck shell=bash
# Sourced by tests/run.sh, demo.sh, e2e.sh and fresh-machine.sh: collects the Debian packages
# they lack, installs them, and checks afterwards that every command asked for is there.
#   need COMMAND PACKAGE   PACKAGE is missing if COMMAND is not in PATH
#   need_pkg PACKAGE       PACKAGE is missing if dpkg does not have it installed
#   install_missing        installs what is missing; returns non-zero, naming each command
#                          or package still missing, if apt could not bring them all
needs=()     # "COMMAND PACKAGE", every need
need_pkgs=() # every need_pkg
need() { needs+=("$1 $2"); }
need_pkg() { need_pkgs+=("$1"); }
pkg_installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'ok installed'; }

# Every need not met now, a line each: its package, then the command it should bring ("-"
# for a need_pkg).
unmet() {
  local n cmd pkg
  for n in "${needs[@]}"; do
    read -r cmd pkg <<<"$n"
    command -v "$cmd" >/dev/null 2>&1 || echo "$pkg $cmd"
  done
  for pkg in "${need_pkgs[@]}"; do pkg_installed "$pkg" || echo "$pkg -"; done
}
# The packages of the needs not met, each once.
unmet_packages() { unmet | awk '{print $1}' | sort -u; }

# QEMU's system emulator and its tools come from one source package: a newer qemu-utils
# (a machine image may ship backports' 10.0) Breaks the distribution's qemu-system-common,
# and apt then removes it to install qemu-system-x86, which leaves no qemu-img. So whenever
# one of the two is to be installed, both are, in the version apt would pick for
# qemu-system-x86, in one transaction (downgrading qemu-utils if it must).
qemu_pair() {
  local v
  [[ " $* " == *" qemu-system-x86 "* || " $* " == *" qemu-utils "* ]] || {
    printf '%s\n' "$@"
    return
  }
  v=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  for p in "$@"; do
    case $p in qemu-system-x86 | qemu-utils) ;; *) echo "$p" ;; esac
  done
  if [ -n "$v" ] && [ "$v" != "(none)" ] && apt-cache madison qemu-utils | awk -F' *\\| *' '{print $2}' | grep -qxF "$v"; then
    echo "qemu-system-x86=$v"
    echo "qemu-utils=$v"
  else
    echo qemu-system-x86
    echo qemu-utils
  fi
}

apt_install() {
  # --no-install-recommends: qemu-system-x86 recommends qemu-block-extra, tied to the
  # distribution's QEMU version; nothing the tests run needs a recommends.
  apt-get install -y -q --no-install-recommends --allow-downgrades "$@"
}

# What to ask apt for, for the packages given.
apt_names() {
  local pkgs=("$@")
  # Debian 11 had dbus-daemon inside the dbus package.
  if [[ " ${pkgs[*]} " == *" dbus-daemon "* ]] && ! apt-cache show dbus-daemon >/dev/null 2>&1; then
    pkgs=("${pkgs[@]/#dbus-daemon/dbus}")
  fi
  qemu_pair "${pkgs[@]}"
}

install_missing() {
  local pkgs pass pkg cmd
  mapfile -t pkgs < <(unmet_packages)
  [ ${#pkgs[@]} -gt 0 ] || return 0
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # apt may remove a package that brought a command asked for, or a package may not bring
  # its command: a second pass for whatever is still missing.
  for pass in first second; do
    mapfile -t pkgs < <(apt_names "${pkgs[@]}")
    echo "== installing ${pkgs[*]} ($pass pass)"
    apt_install "${pkgs[@]}" || true
    mapfile -t pkgs < <(unmet_packages)
    [ ${#pkgs[@]} -gt 0 ] || return 0
  done
  unmet | while read -r pkg cmd; do
    if [ "$cmd" = - ]; then
      echo "packages.sh: package $pkg is not installed: apt could not install it" >&2
    else
      echo "packages.sh: '$cmd' is missing: apt did not install package $pkg, or it no longer brings $cmd" >&2
    fi
  done
  return 1
}

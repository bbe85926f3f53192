# shellcheck shell=bash
# Sourced by tests/run.sh, tests/demo.sh and tests/e2e.sh: collects the Debian packages they
# lack, installs them, and checks afterwards that every command asked for is there.
#   need COMMAND PACKAGE   PACKAGE is missing if COMMAND is not in PATH
#   need_pkg PACKAGE       PACKAGE is missing if dpkg does not have it installed
#   install_missing        installs what is missing; returns non-zero, naming each command
#                          or package still missing, if apt could not bring them all
needs=()     # "COMMAND PACKAGE", every need, checked again after the install
need_pkgs=() # every need_pkg
missing=()
need() {
  needs+=("$1 $2")
  command -v "$1" >/dev/null 2>&1 || missing+=("$2")
}
need_pkg() {
  need_pkgs+=("$1")
  pkg_installed "$1" || missing+=("$1")
}
pkg_installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q 'ok installed'; }

# The packages of needs that are still unmet, each once.
unmet() {
  local n cmd pkg gaps=()
  for n in "${needs[@]}"; do
    read -r cmd pkg <<<"$n"
    command -v "$cmd" >/dev/null 2>&1 || gaps+=("$pkg")
  done
  for pkg in "${need_pkgs[@]}"; do pkg_installed "$pkg" || gaps+=("$pkg"); done
  [ ${#gaps[@]} -eq 0 ] || printf '%s\n' "${gaps[@]}" | sort -u
}

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

install_missing() {
  [ ${#missing[@]} -gt 0 ] || return 0
  local pkgs still
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  # Debian 11 had dbus-daemon inside the dbus package.
  if [[ " ${missing[*]} " == *" dbus-daemon "* ]] && ! apt-cache show dbus-daemon >/dev/null 2>&1; then
    missing=("${missing[@]/#dbus-daemon/dbus}")
  fi
  mapfile -t pkgs < <(printf '%s\n' "${missing[@]}" | sort -u)
  mapfile -t pkgs < <(qemu_pair "${pkgs[@]}")
  echo "== installing ${pkgs[*]}"
  apt_install "${pkgs[@]}" || true
  # apt may have removed a package that brought a command asked for, or a package may not
  # have brought its command: a second pass for whatever is still missing.
  mapfile -t still < <(unmet)
  if [ ${#still[@]} -gt 0 ]; then
    mapfile -t pkgs < <(qemu_pair "${still[@]}")
    echo "== still missing after the install: ${still[*]}; installing ${pkgs[*]} again"
    apt_install "${pkgs[@]}" || true
    mapfile -t still < <(unmet)
  fi
  if [ ${#still[@]} -gt 0 ]; then
    local n cmd pkg
    for n in "${needs[@]}"; do
      read -r cmd pkg <<<"$n"
      command -v "$cmd" >/dev/null 2>&1 || echo "packages.sh: '$cmd' is missing: apt did not install package $pkg, or it no longer brings $cmd" >&2
    done
    for pkg in "${need_pkgs[@]}"; do
      pkg_installed "$pkg" || echo "packages.sh: package $pkg is not installed: apt could not install it" >&2
    done
    return 1
  fi
  missing=()
}

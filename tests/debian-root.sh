# shellcheck shell=bash
# Sourced by tests/e2e.sh and tests/fresh-machine.sh: a Debian root made with debootstrap,
# cached by what it holds, made in a temporary directory and renamed when complete, so a
# half-made one is never used.
#   debian_root CACHE SUITE INCLUDE [SETUP]
# Prints the root's path on stdout, and what it does on stderr. SETUP, if given, is a
# function run on the new root (its path as $1) before it is marked complete; its text is
# part of the cache key. Returns non-zero (with the end of the log) on failure.
# E2E_MIRROR overrides the Debian mirror, which is otherwise the host's own.

debian_mirror() {
	local suite=$1 m=
	if [ -n "${E2E_MIRROR:-}" ]; then
		echo "$E2E_MIRROR"
		return
	fi
	# deb822 files: the first URIs of a stanza whose Suites has the suite and that is not
	# the security archive; else a one-line "deb URI suite ..." entry.
	m=$(awk -v s="$suite" '
		/^[[:space:]]*$/ { if (u != "" && ok) { print u; exit } u = ""; ok = 0; next }
		/^URIs:/ { u = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) ok = 1 }
		END { if (u != "" && ok) print u }' /etc/apt/sources.list.d/*.sources 2>/dev/null |
		grep -v security | head -n 1)
	[ -n "$m" ] || m=$(grep -hE "^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+[[:space:]]+${suite}[[:space:]]" \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
		sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' | awk '{print $1}' | head -n 1)
	echo "${m:-http://deb.debian.org/debian}"
}

debian_root() {
	local cache=$1 suite=$2 include=$3 setup=${4:-} key root tmp mirror t0
	key=$({
		printf '%s\n' "$suite" minbase "$include"
		[ -z "$setup" ] || declare -f "$setup"
	} | sha256sum | cut -c1-16)
	root=$cache/$key
	if [ -x "$root/usr/bin/apt-get" ] && [ -f "$root/.root-complete" ]; then
		echo "== root: cached $root" >&2
		# mktemp made it 0700; / must let every user through (roots of older runs too).
		chmod 755 "$root"
		echo "$root"
		return 0
	fi
	mirror=$(debian_mirror "$suite")
	echo "== root: debootstrap $suite ($include) from $mirror" >&2
	mkdir -p "$cache"
	# Leftovers of an interrupted run are never used; remove them.
	rm -rf "$cache"/tmp.* "$root"
	tmp=$(mktemp -d "$cache/tmp.XXXXXX")
	# It becomes the root directory: every user must get through it, not only root.
	chmod 755 "$tmp"
	t0=$(date +%s)
	if ! debootstrap --variant=minbase --include="$include" "$suite" "$tmp" "$mirror" \
		>"$cache/debootstrap.log" 2>&1; then
		tail -n 20 "$cache/debootstrap.log" >&2
		rm -rf "$tmp"
		echo "debootstrap of $suite from $mirror failed (log: $cache/debootstrap.log)" >&2
		return 1
	fi
	if [ -n "$setup" ] && ! "$setup" "$tmp" >>"$cache/debootstrap.log" 2>&1; then
		tail -n 20 "$cache/debootstrap.log" >&2
		rm -rf "$tmp"
		echo "$setup on the new root failed (log: $cache/debootstrap.log)" >&2
		return 1
	fi
	apt-get -o Dir="$tmp" clean 2>/dev/null || rm -f "$tmp"/var/cache/apt/archives/*.deb
	touch "$tmp/.root-complete"
	mv "$tmp" "$root"
	echo "   made in $(($(date +%s) - t0))s ($(du -sh "$root" | cut -f1))" >&2
	echo "$root"
}

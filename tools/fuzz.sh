#!/usr/bin/env bash
# Run every Fuzz* target in the given packages (default ./...) for FUZZTIME
# each (default 50000 inputs; a count, since a timed run can fail spuriously
# on Go 1.26, golang/go#75804). `go test -fuzz` takes one package and one target at a
# time, so this lists them first.
set -euo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-50000x}
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Packages with test files only; -list compiles their tests without running them.
mapfile -t pkgs < <("$GO" list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' "${@:-./...}")

ran=0
for pkg in "${pkgs[@]}"; do
	[ -n "$pkg" ] || continue
	mapfile -t targets < <("$GO" test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true)
	for target in "${targets[@]}"; do
		[ -n "$target" ] || continue
		echo "==> $pkg $target ($FUZZTIME)"
		"$GO" test -run='^$' -fuzz="^${target}\$" -fuzztime="$FUZZTIME" "$pkg"
		ran=$((ran + 1))
	done
done
echo "fuzzed $ran target(s)"

#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
# Push benchmark (by hand, not CI): in one run, against one fresh troved,
#   1. trove push of the test closure (first push) and an identical re-push
#      into a second cache (every chunk already stored),
#   2. nix copy --to 'file://…?compression=zstd' (Nix's own binary cache),
#   3. nix copy --to 'http://…/<cache>?compression=zstd' into troved.
# Prints seconds, MB/s of NAR and bytes sent (troved's bytes_received_total)
# for each.
#
#   tests/bench/bench-push.sh [BUILD_DIR]     (default build/release)
# BIG_SIZE=300M sets the size of the closure's large random file.
set -eu

SRC=$(cd "$(dirname "$0")/../.." && pwd)
BUILD=${1:-$SRC/build/release}
TROVE=$BUILD/tools/trove
TROVED=$BUILD/server/troved
BIG_SIZE=${BIG_SIZE:-300M}
export NIX_CONFIG='build-users-group =
substituters =
sandbox = false
experimental-features = nix-command'

[ -x "$TROVE" ] && [ -x "$TROVED" ] || { echo "build first: $TROVE, $TROVED" >&2; exit 2; }

WORK=$(mktemp -d /tmp/trove-bench-push.XXXXXX)
chmod 755 "$WORK"
PORT=$(/usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
URL=http://127.0.0.1:$PORT
TPID=
cleanup() {
        [ -n "$TPID" ] && kill "$TPID" 2>/dev/null && wait "$TPID" 2>/dev/null
        rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "building the test closure (big file $BIG_SIZE)..." >&2
TOP=$(nix-build "$SRC/tests/integration/closure.nix" -A top --argstr bigSize "$BIG_SIZE" \
        --out-link "$WORK/closure")
NAR_BYTES=$(nix path-info -r --json "$TOP" | /usr/bin/python3 -c \
        'import json,sys; print(sum(p["narSize"] for p in json.load(sys.stdin)))')

"$TROVED" --state-dir "$WORK/state" --listen "127.0.0.1:$PORT" --log-level warning \
        >"$WORK/troved.log" 2>&1 &
TPID=$!
i=0
until curl -sf "$URL/health" >/dev/null; do
        i=$((i + 1)); [ $i -lt 600 ] || { cat "$WORK/troved.log" >&2; exit 1; }
        sleep 0.1
done
TOKEN=$("$TROVED" token --state-dir "$WORK/state" --cache '*' --perm all)
export XDG_CONFIG_HOME=$WORK/config XDG_CACHE_HOME=$WORK/xdg-cache
"$TROVE" login bench "$URL" "$TOKEN" >/dev/null
for c in first again nixhttp; do "$TROVE" cache create "$c" >/dev/null; done
printf 'machine 127.0.0.1 password %s\n' "$TOKEN" > "$WORK/netrc"

received() {
        curl -s "$URL/metrics" | awk '$1 == "trove_bytes_received_total" { print $2 }'
}
now() { date +%s.%N; }
report() { # name seconds bytes_sent
        /usr/bin/python3 -c 'import sys
name, secs, sent, nar = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
print(f"{name:<34} {secs:8.2f} s {nar/1e6/secs:9.1f} MB/s NAR {sent/1e6:10.1f} MB sent")' \
                "$1" "$2" "$3" "$NAR_BYTES"
}
measure() { # name command...
        name=$1; shift
        b0=$(received); t0=$(now)
        "$@" >"$WORK/out.log" 2>&1 || { cat "$WORK/out.log" >&2; exit 1; }
        t1=$(now); b1=$(received)
        report "$name" "$(echo "$t1 - $t0" | bc)" "$(echo "$b1 - $b0" | bc)"
}

echo "closure: $(nix-store -qR "$TOP" | wc -l) paths, $NAR_BYTES NAR bytes; $(nproc) cores"
measure "trove push (first)" "$TROVE" push --no-progress first "$TOP"
measure "trove push (identical, new cache)" "$TROVE" push --no-progress again "$TOP"
measure "trove push (re-push, same cache)" "$TROVE" push --no-progress first "$TOP"
measure "nix copy file://?compression=zstd" nix copy --to "file://$WORK/filecache?compression=zstd" "$TOP"
measure "nix copy http://troved (zstd)" nix copy --option netrc-file "$WORK/netrc" \
        --to "$URL/nixhttp?compression=zstd" "$TOP"

#!/usr/bin/env bash
# Smoke test of the frozen application: with no user and no display (QT_QPA_PLATFORM=offscreen),
#   1. the bundle's CLI makes a tiny toy-birds set and trains a smallnet run on it (1 epoch, 64 px),
#   2. the GUI program runs a training job the way the window starts one (fieldmark-gui --child train, events as
#      JSON lines on stdout; it must end with a "Finished" event and status 0),
#   3. the GUI opens the run of step 1, shows its window and quits by itself (--quit-after 3000),
# and passes when the GUI exits with status 0, logged "active run: <run>" and logged no error or traceback.
#
#   bash packaging/smoke_test.sh [DIST_DIR]    default dist/fieldmark (after bash packaging/build.sh)
#   bash packaging/smoke_test.sh --source      the same against the virtual environment's fieldmark(-gui)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
target="${1:-$root/dist/fieldmark}"
if [ "$target" = "--source" ]; then
    venv="${FIELDMARK_VENV:-$root/.venv}"
    cli="$venv/bin/fieldmark"; gui="$venv/bin/fieldmark-gui"
    export MALLOC_MMAP_THRESHOLD_="${MALLOC_MMAP_THRESHOLD_:-4000000000}"
    export MALLOC_TRIM_THRESHOLD_="${MALLOC_TRIM_THRESHOLD_:-4000000000}"
else
    cli="$target/fieldmark"; gui="$target/fieldmark-gui"
fi
for exe in "$cli" "$gui"; do
    if [ ! -x "$exe" ]; then
        echo "smoke_test: $exe is missing: build first (bash packaging/build.sh)" >&2
        exit 1
    fi
done
tmp="$(mktemp -d "${TMPDIR:-/tmp}/fieldmark-smoke.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT
export QT_QPA_PLATFORM=offscreen
export HOME="$tmp/home" XDG_CONFIG_HOME="$tmp/home/.config" XDG_CACHE_HOME="$tmp/home/.cache"
export XDG_DATA_HOME="$tmp/home/.local/share" XDG_RUNTIME_DIR="$tmp/runtime"
mkdir -p "$HOME" "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
t0=$(date +%s)

echo "smoke_test: $cli toybirds + train (smallnet, 1 epoch, 64 px)"
"$cli" toybirds "$tmp/birds" --classes 4 --per-class 8 --size 64 >"$tmp/toybirds.log" 2>&1 \
    || { cat "$tmp/toybirds.log" >&2; echo "smoke_test: FAILED (toybirds)" >&2; exit 1; }
"$cli" train "$tmp/birds" --out "$tmp/run" --model smallnet --epochs 1 --img-size 64 --batch-size 8 \
    >"$tmp/train.log" 2>&1 || { tail -30 "$tmp/train.log" >&2; echo "smoke_test: FAILED (train)" >&2; exit 1; }

echo "smoke_test: $gui --child train (the window's training job)"
cfg="{\"data\": \"$tmp/birds\", \"out\": \"$tmp/child-run\", \"model\": \"smallnet\", \"epochs\": 1, \"img_size\": 64, \"batch_size\": 8}"
mkfifo "$tmp/stdin"
exec 3<>"$tmp/stdin"  # the job stops when its stdin ends (the window is gone): keep a writer open
set +e
"$gui" --child train --config "$cfg" <"$tmp/stdin" >"$tmp/child.out" 2>"$tmp/child.err"
child=$?
set -e
exec 3>&-
if [ "$child" -ne 0 ] || ! tail -1 "$tmp/child.out" | grep -q '"type": "Finished"'; then
    tail -20 "$tmp/child.err" >&2
    echo "smoke_test: FAILED (fieldmark-gui --child train: status $child)" >&2
    exit 1
fi
t1=$(date +%s)

echo "smoke_test: $gui $tmp/run --quit-after 3000"
set +e
timeout 600 "$gui" "$tmp/run" --settings "$tmp/settings.ini" --quit-after 3000 >"$tmp/gui.log" 2>&1
code=$?
set -e
t2=$(date +%s)
sed 's/^/  | /' "$tmp/gui.log"
fail=""
[ "$code" -eq 0 ] || fail="exit status $code"
grep -q "active run: " "$tmp/gui.log" || fail="${fail:+$fail; }the run was not opened (no 'active run:' line)"
grep -q "quitting after 3000 ms" "$tmp/gui.log" || fail="${fail:+$fail; }it did not quit by its timer"
if grep -E -q "Traceback|^ERROR|^CRITICAL" "$tmp/gui.log"; then
    fail="${fail:+$fail; }errors in the log"
fi
if [ -n "$fail" ]; then
    echo "smoke_test: FAILED: $fail" >&2
    exit 1
fi
echo "smoke_test: passed (CLI toybirds + train and the GUI's child job $((t1 - t0)) s, GUI start-open-quit" \
     "$((t2 - t1)) s)"

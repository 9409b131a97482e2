#!/bin/sh
# Shows that check_step.py's batch check can fail: each break of a dumped batch
# (corrupt_dump.py) must make it exit 1 naming the break.
# usage: check_bad_batches.sh DUMP_STEP PYTHON WORK_DIR
set -u
dump_step="$1" python="$2" work="$3"
here="$(dirname "$0")"
rm -rf "$work" && "$dump_step" "$work/clean" supervised 1 >/dev/null || exit 2
failed=0
for case in "self-pool|row 0 pools itself" "other-class|row 0: a 1 in segment 0" \
  "unscaled|row 0 is not a digit"; do
  kind="${case%%|*}" message="${case#*|}"
  cp -r "$work/clean" "$work/$kind"
  "$python" "$here/corrupt_dump.py" "$work/$kind" "$kind" || exit 2
  "$python" "$here/check_step.py" "$work/$kind" >"$work/$kind.log" 2>&1
  rc=$?
  if [ "$rc" -eq 1 ] && grep -q "$message" "$work/$kind.log"; then
    echo "$kind: caught ($message)"
  else
    echo "$kind: NOT caught (exit $rc; expected 1 and \"$message\"):"
    cat "$work/$kind.log"
    failed=1
  fi
done
exit "$failed"

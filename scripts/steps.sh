# Shared by the device suites (hopper-bench.sh, moe-bench.sh): a step runner that logs each
# command under $out/<name>.log, bounds it by STEP_TIMEOUT_S, and keeps a summary line.
#   source scripts/steps.sh; out=$(mktemp -d); step NAME COMMAND...; finish_steps DEST PREFIX
# ONLY (a regex) runs just the steps whose name matches, e.g. ONLY=decode for one kernel's checks.
declare -a summary
step() { # name, command...
  local name=$1; shift
  [[ $name =~ ${ONLY:-.} ]] || return 0
  local t0=$(date +%s)
  if timeout "${STEP_TIMEOUT_S:-90}" "$@" >>"$out/$name.log" 2>&1; then r=PASS; else r="FAIL(rc=$?)"; fi
  summary+=("$(printf '%-44s %-10s %4ss' "$name" "$r" $(( $(date +%s) - t0 )))")
  tail -n 2 "$out/$name.log"
}
# Prints the summary, packs every log into DEST/PREFIX-logs.tgz, copies the summary and the
# side-by-side table next to it; fails when a step failed.
finish_steps() { # dest, prefix
  printf '%s\n' "${summary[@]}" | tee "$out/summary.txt"
  tar -czf "$1/$2-logs.tgz" -C "$out" .
  cp "$out/summary.txt" "$1/"
  [ -f "$out/side_by_side.log" ] && cp "$out/side_by_side.log" "$1/"
  ! grep -q FAIL "$out/summary.txt"
}

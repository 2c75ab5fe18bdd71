#!/usr/bin/env bash
# The held-out evaluation of issue 17: `thinkbox bench reasoning` on the test split (seed 7331), every
# default family with the direct, cot, code and router arms, 20 items each (the two controls 60), into
# docs/bench/reasoning-test/. One family per command, so a stop (the end of a session, Ctrl-C, kill) loses
# at most the item in flight: run this again and every cached result is reused. Results are cached under
# the agent's fingerprint: a change to the agent, the model backends or the benchmark's tasks and arms
# starts a fresh set (the report says which fingerprint each result has), so finish a run before changing
# them. The last command asks the model nothing: it writes the report of all families from the cache.
#
#   bash scripts/heldout.sh            # resume (or start) the whole run
#   bash scripts/heldout.sh loan tsp   # only these families
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export THINKBOX_MODEL__TIMEOUT_S="${THINKBOX_MODEL__TIMEOUT_S:-900}"  # a loaded machine; not in the fingerprint
OUT=docs/bench/reasoning-test
ARMS=direct,cot,code,router
FAMILIES=(products gsm_symbolic calendar_arithmetic knapsack decimal_arithmetic humaneval count_primes loan
          letter_counting tsp time_intervals shortest_path number_sorting base_conversion csv_stats
          recall wording)
bench() { .venv/bin/thinkbox bench reasoning --split test --arms "$ARMS" --out "$OUT" "$@"; }
if [ $# -gt 0 ]; then FAMILIES=("$@"); fi
for family in "${FAMILIES[@]}"; do
  case "$family" in recall|wording) n=60 ;; *) n=20 ;; esac   # the controls: 60 items
  echo "=== $family ($n items) $(date -u +%FT%TZ)"
  bench --n "$n" --families "$family" > /dev/null || exit $?
done
# The report of everything this agent version has in the cache (asks the model nothing).
echo "=== report"
bench --from-cache > /dev/null && echo "report: $OUT/report.md"

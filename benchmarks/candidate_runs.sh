#!/usr/bin/env bash
# The development runs that benchmarks/candidate_rule.py judges, for one model, into one folder:
#
#     bash benchmarks/candidate_runs.sh DIR [CHECKPOINT]
#
# CHECKPOINT defaults to the shipped one; run it for the shipped model and for the candidate
# (recalibrated as it would ship), then `python benchmarks/candidate_rule.py --shipped DIR1
# --candidate DIR2`. A code change is judged by running this from a checkout of each side
# (e.g. `git worktree add`), with PYTHONPATH set to it. One torch thread; each run's log
# lies beside its JSON. The held-out generator is never run here.
set -euo pipefail
if [[ $# -lt 1 || $# -gt 2 || $1 == -h || $1 == --help ]]; then
    sed -n 2,10p "$0" | sed 's/^# \{0,1\}//'
    exit 2
fi
out=$1
checkpoint=(${2:+--checkpoint "$2"})
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
export OMP_NUM_THREADS=1
run() {
    local name=$1
    shift
    echo "$(date +%T) $name" >&2
    python "$@" "${checkpoint[@]}" --json "$out/$name.json" >"$out/$name.log" 2>&1 ||
        { echo "$name failed: see $out/$name.log" >&2; exit 1; }
}
run own "$here/own_generator.py" --studies 50
run widen "$here/naming_dev.py" --studies 100 --seed 9700
run bones "$here/naming_dev.py" --studies 100 --seed 9700 --anatomy bones
run random "$here/naming_dev.py" --studies 100 --seed 9700 --look random
echo "$(date +%T) done: $out" >&2

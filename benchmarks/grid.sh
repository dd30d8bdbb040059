#!/usr/bin/env bash
# Keep the full grid going across sessions whose disks may not survive:
#   1. set up .venv if it is missing (make install);
#   2. put the archived results, settings, training logs and kept runs (below) back into
#      reports/benchmark (archive.py --restore never overwrites a file or a run directory, and
#      refuses other settings);
#   3. start `lbr benchmark --seeds 0,1` with any extra flags given here, in the background
#      (it resumes: finished runs and evaluations are skipped);
#   4. every 5 minutes while it runs, archive the finished evaluations and training logs into
#      benchmarks/results/grid-full and commit them there; once when it stops (finished, failed
#      or killed), the same plus the stage-1 runs that a method still to be evaluated starts
#      from (archive.py --stage1-weights; about 20 MB each, dropped once their readers are done),
#      which the next --restore puts back, so a new checkout does not train them again; and the
#      newest readable checkpoint of a run the stop cut short, if 10 minutes or more of training
#      stand behind it (archive.py --partial-runs; about 60 MB, dropped once the run's result
#      exists), which --restore puts back for the next grid to resume from instead of step 0. Before
#      that last save, report.md and results.json are written again for the whole grid
#      (--report-only), so a run of a part of it does not leave a report of that part only
#      (when only --domains, --settings, --methods and --seeds were given).
#
#   benchmarks/grid.sh                                          # the whole grid
#   benchmarks/grid.sh --domains chemistry,code --settings open  # a part of it
#
# Logs: logs/benchmark.log (the grid) and logs/archive.log (the archiving loop).
set -euo pipefail
cd "$(dirname "$0")/.."
out=reports/benchmark
archive=benchmarks/results/grid-full
mkdir -p logs
[ -x .venv/bin/lbr ] || make install
# The process itself, not a shell whose command line names it (the archiving loop's does).
if pgrep -f "^[^ ]*python[0-9.]* [^ ]*bin/lbr benchmark" > /dev/null; then
    echo "an lbr benchmark is already running (one heavy job at a time); not starting another" >&2
    exit 1
fi
# The whole grid's report at the end, unless a flag other than the part's scope changed the settings
# (--eval-split dev, --budget ...): a report of the whole grid under other settings would refuse.
whole_report=1
for arg in "$@"; do
    case "$arg" in
        --domains|--settings|--methods|--seeds|--domains=*|--settings=*|--methods=*|--seeds=*) ;;
        -*) whole_report=0 ;;
    esac
done
.venv/bin/python benchmarks/archive.py --restore "$archive" "$out"
nohup .venv/bin/lbr benchmark --seeds 0,1 --output "$out" "$@" > logs/benchmark.log 2>&1 &
grid=$!
save() {
    .venv/bin/python benchmarks/archive.py "$@" "$out" "$archive" > /dev/null || return 1  # commit no half-save
    git add "$archive"
    git diff --cached --quiet -- "$archive" || git commit -q -m "grid: archive finished evaluations and training logs" -- "$archive"
}
nohup bash -c "$(declare -f save); out=$out archive=$archive
    while kill -0 $grid 2> /dev/null; do sleep ${GRID_ARCHIVE_SECONDS:-300}; save || true; done
    [ $whole_report = 0 ] || .venv/bin/lbr benchmark --seeds 0,1 --output \"\$out\" --report-only > /dev/null || true
    save --stage1-weights --partial-runs" > logs/archive.log 2>&1 &
echo "grid running (pid $grid): tail -f logs/benchmark.log; archived to $archive every 5 minutes"

#!/usr/bin/env bash
# The reproduction study's CPU cells (issue "Reproduction study"), in priority
# order, as two lanes that can run side by side on a 2-core machine:
#
#   benchmarks/reproduce.sh a &   benchmarks/reproduce.sh b &
#   benchmarks/reproduce.sh c     # when a lane is free: the reference module
#   benchmarks/reproduce.sh d     # sweeps (section 3), e: table 4
#   benchmarks/reproduce.sh collect  # what finished -> results/paper + report
#
# Every command resumes (--resume): run the lanes again after an interruption
# and finished runs are kept. Results go to $OUT (default results/study); turn
# them into committed rows with `benchmarks/reproduce.sh collect` (every
# lane's finished runs, the sweeps' summaries and confirmation runs, then
# the report), and commit results/paper and docs.
# On a fresh machine (the $OUT folder gone) the lanes continue from what is
# committed: runs with a row in $RUNS (results/paper/runs.csv) are skipped
# (--skip-committed), and a sweep continues from its committed summary
# (results/paper/sweeps/DATASET-METHOD.json, --continue-from). Commit rows
# and summaries as they finish: a run cut short by the end of a machine's
# session starts over on the next one.
# HMA-style runs score every epoch under all three eval modes
# (--compare-evals) so section 0 of the study needs no extra training.
# The cells that started before seed batching became the runners' default
# say --seed-batch 1 (one run at a time): their finished runs are that
# configuration, and --resume keeps only runs of the same configuration.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
OUT=${OUT:-results/study}
RUNS=${RUNS:-results/paper/runs.csv}
SWEEPS=$(dirname "$RUNS")/sweeps
REPORT=${REPORT:-docs/reproduction.md}  # `collect` writes it, figures beside
# One output folder per lane: a runner locks its --out folder while it runs.
run() { echo "== $*" >&2; "$PY" benchmarks/ood.py "$@" --resume --compare-evals --quiet --skip-committed "$RUNS" --out "$OUT/ood$LANE"; }

case "${1:-}" in
  a)  # table 6, size shift: the large TU datasets
    LANE=
    run --dataset NCI1 --method erm irm vrex hma --seeds 10 --seed-batch 1
    run --dataset NCI109 --method erm irm vrex hma --seeds 10 --seed-batch 1
    run --dataset NCI1 --method rma abd abd+syn abd+rma --seeds 10 --seed-batch 1
    run --dataset DD --method erm irm vrex hma --seeds 10 --seed-batch 1
    ;;
  b)  # table 6 PROTEINS with ablations, then table 5 (degree shift)
    LANE=-b
    run --dataset PROTEINS --method erm irm vrex hma --seeds 10 --seed-batch 1
    run --dataset PROTEINS --method rma abd abd+syn abd+rma --seeds 10 --seed-batch 1
    # 10 seeds: section 0 compares the eval modes on them
    run --dataset Graph-SST5 --method erm hma --seeds 10 --seed-batch 1
    # seed-batched from here on (5 seeds of a method as one model, ~2x throughput)
    run --dataset Graph-Twitter --method erm irm vrex hma --seeds 5 --seed-batch 5
    run --dataset Graph-SST5 --method irm vrex --seeds 5 --seed-batch 5
    ;;
  c)  # faithfulness: the released code's module (--set hma.style=reference),
      # early stopping on the released code's evaluation (dataset order);
      # `collect` adds them as the `reference` configuration
    for ds in NCI1 PROTEINS; do
      echo "== reference $ds" >&2
      "$PY" benchmarks/ood.py --dataset "$ds" --method hma --seeds 10 \
        --set hma.style=reference --eval order --seed-batch 1 --resume \
        --compare-evals --skip-committed "$RUNS" \
        --quiet --out "$OUT/reference"
    done
    ;;
  d)  # tuned as the paper did (benchmarks/sweep.py): HMA over the paper's
      # M x k grid, ERM over dropout x lr (same budget), 3 search seeds,
      # confirmed on seeds 0-9; `collect` copies each sweep's best.json to
      # results/paper/sweeps/DATASET-METHOD.json (also while it is
      # unfinished: best.json holds its finished trials) and adds the
      # confirmation runs as the `tuned` configuration
    for ds in ${SWEEP_DATASETS:-PROTEINS NCI1 NCI109 DD Graph-SST5 Graph-Twitter}; do
      for m in erm hma; do
        echo "== sweep $ds $m" >&2
        kept=(); [ -f "$SWEEPS/$ds-$m.json" ] && kept=(--continue-from "$SWEEPS/$ds-$m.json")
        "$PY" benchmarks/sweep.py --runner ood --dataset "$ds" --method "$m" \
          --out "$OUT/sweeps/$ds-$m" "${kept[@]}" -- --seed-batch 3
      done
    done
    ;;
  e)  # table 4, in distribution (G-Mixup's protocol, 8 seeds): HMA and
      # its ablations on both IMDB sets first, then DropEdge, DropNode and
      # M-Mixup, then REDDIT-B. Seed-batched (a seed's run does not depend
      # on its group): by default for ERM-like methods (IMDB-BINARY: a group
      # of 6 seeds in 26 min here); 2 seeds per model for the HMA family
      # (0.6 s per epoch and seed, a group in ~16 min: larger groups gain
      # little on these batches, and a machine session that ends mid-group
      # loses less); REDDIT-B's seeds train one at a time on a CPU (the cap)
    tu() { echo "== tu_id $*" >&2; "$PY" benchmarks/tu_id.py --seeds 8 \
      --resume --quiet --skip-committed "$RUNS" --out "$OUT/tu_id" "$@"; }
    for ds in IMDB-BINARY IMDB-MULTI; do
      tu --dataset "$ds" --method erm
      tu --dataset "$ds" --method hma rma abd abd+syn --seed-batch 2
    done
    for ds in IMDB-BINARY IMDB-MULTI; do
      tu --dataset "$ds" --method dropedge dropnode mmixup
    done
    tu --dataset REDDIT-BINARY --method all
    ;;
  collect)  # every lane's finished runs, sweep summaries, the report
    R() { echo "== reproduction.py $*" >&2; "$PY" benchmarks/reproduction.py "$@"; }
    # every lane's folder: ood, ood-b, tu_id, and any second lane's copy
    # (e.g. tu_id-b, when table 4's methods are split over two lanes)
    for lane in "$OUT"/ood "$OUT"/ood-* "$OUT"/tu_id "$OUT"/tu_id-*; do
      if [ -d "$lane" ]; then R collect "$lane" --runs "$RUNS"; fi
    done
    if [ -d "$OUT/reference" ]; then
      R collect "$OUT/reference" --config reference --runs "$RUNS"
    fi
    if [ -d "$OUT/sweeps" ]; then R sweeps "$OUT/sweeps" --runs "$RUNS"; fi
    R report --runs "$RUNS" --out "$REPORT" --figures "$(dirname "$REPORT")/figures"
    ;;
  *) echo "usage: $0 a|b|c|d|e|collect" >&2; exit 2 ;;
esac

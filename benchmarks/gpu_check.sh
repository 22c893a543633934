#!/usr/bin/env bash
# The speed benchmark on a GPU machine, in one command.
#
# The GPU image has torch and torch-geometric but no ogb, RDKit or spaCy and
# no internet, so the datasets travel as plain tensors. Prepare them here:
#
#   python -m pyg_hma.data export --dataset ogbg-molhiv NCI1 \
#       --out .gpu_data/exported                                        # the speed runs
#   python -m pyg_hma.data export --dataset ogbg-molbace --seeds 10 \
#       --out .gpu_data/exported                                        # the 10-seed table
#
# then copy the repository with the ignored folder .gpu_data/ and run
#
#   bash benchmarks/gpu_check.sh                 # on the GPU (device cuda)
#   bash benchmarks/gpu_check.sh --device cpu --quick   # rehearsal on a CPU
#
# Datasets without a file in .gpu_data/exported fall back to --synthetic
# graphs.
# Every result is printed and written as JSON to $OUT (if set, e.g. by the
# device runner) or results/gpu_check/. Each benchmark has its own time cap
# (scaled by CAP_SCALE, default 1), so one slow configuration cannot eat the
# others' time; all caps together come to 9.7 minutes. The NCI1 GCN paths,
# molhiv GIN-v, Graph-SST5 and breakdown runs of the first GPU session are
# left out (see docs/performance.md for their commands).
set -uo pipefail
cd "$(dirname "$0")/.."

DEVICE=cuda
QUICK=()
JOBS=${JOBS:-4}
DATA=${GPU_DATA:-.gpu_data}
OUTDIR=${OUT:-results/gpu_check}
CAP_SCALE=${CAP_SCALE:-1}
PY=${PYTHON:-python3}
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --quick) QUICK=(--quick); shift ;;
        --data) DATA=$2; shift 2 ;;
        --out) OUTDIR=$2; shift 2 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
mkdir -p "$OUTDIR"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1

echo "== machine"
date -u
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
"$PY" - <<EOF
import os, torch, torch_geometric
print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'PyG', torch_geometric.__version__, 'cpus', os.cpu_count())
if '$DEVICE'.startswith('cuda'):
    assert torch.cuda.is_available(), 'CUDA is not available'
    print('device', torch.cuda.get_device_name(0))
EOF
[ $? -eq 0 ] || exit 1

status=0
bench() {  # bench CAP_S NAME DATASET BACKBONE [speed.py arguments...]
    local cap=$(( $1 * CAP_SCALE )) name=$2 dataset=$3 backbone=$4; shift 4
    local src=(--synthetic)
    [ -f "$DATA/exported/$dataset-seed0.pt" ] && src=(--exported "$DATA/exported")
    echo
    echo "== $name: $dataset $backbone ${src[*]} $*"
    local t0=$SECONDS
    timeout "$cap" "$PY" benchmarks/speed.py --dataset "$dataset" \
        --backbone "$backbone" --device "$DEVICE" "${src[@]}" \
        --threads 1 --out "$OUTDIR/speed_$name.json" "${QUICK[@]}" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || status=1
}

table() {  # table CAP_S NAME [ogb_mol.py arguments...]: the wall time of a table
    local cap=$(( $1 * CAP_SCALE )) name=$2; shift 2
    if [ ! -f "$DATA/exported/ogbg-molbace-seed0.pt" ]; then
        echo "== $name: skipped, no $DATA/exported (python -m pyg_hma.data export)"
        return
    fi
    echo
    echo "== $name: ogb_mol.py $*"
    local t0=$SECONDS
    timeout "$cap" "$PY" benchmarks/ogb_mol.py --dataset ogbg-molbace \
        --exported "$DATA/exported" --device "$DEVICE" --threads 1 \
        --out "$OUTDIR/$name" "${QUICK[@]}" "$@"
    local rc=$?
    echo "== $name: exit $rc after $((SECONDS - t0)) s (wall time of the whole table)"
    [ $rc -eq 0 ] || status=1
}

checks() {  # checks CAP_S NAME: tests/*::*_on_device with PYG_HMA_TEST_DEVICE
    local cap=$(( $1 * CAP_SCALE )) name=$2
    echo
    if ! "$PY" -c 'import pytest' 2>/dev/null; then
        echo "== $name: skipped, no pytest"
        return
    fi
    echo "== $name: tests on $DEVICE"
    local t0=$SECONDS
    PYG_HMA_TEST_DEVICE=$DEVICE timeout "$cap" "$PY" -m pytest -q -x \
        -p no:cacheprovider tests/test_padding.py tests/test_device_loader.py \
        tests/test_seed_batch.py -k on_device 2>&1 | tee "$OUTDIR/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ $rc -eq 0 ] || status=1
}

# Most important first: a call cut short by its time limit loses the last.
# 1. The device checks of the test suite on this device: the static path
#    trains like the eager fast path (ERM and HMA without dropout, CUDA
#    graphs included), the device loader's batches equal PyG's, and
#    seed-batched training equals fit there (its CUDA code: scatter,
#    bernoulli_ per seed).
checks 100 device_checks
# 2. Seed batching (issue 14): OGB's GIN 5x300 on ogbg-molbace, 1, 4 and 10
#    seeds as one model against as many models stepped one after the other,
#    ms per model-step. Target: >= 4x at S = 10.
bench 90 molbace_seed_batch ogbg-molbace GIN --seed-batch 10 \
    --methods erm hma --steps 30 --warmup 10
# 2b. The same, the group padded and captured as CUDA graphs (--pad +
#     --compile reduce-overhead; the sequential models on the static path
#     too): the point of seed batching on a GPU. ERM only (compile time).
bench 70 molbace_seed_batch_static ogbg-molbace GIN --seed-batch 10 \
    --paths static --methods erm --steps 30 --warmup 10
# 3. The 10-seed ogbg-molbace GIN table (ERM and HMA, 100 epochs each, OGB's
#    protocol), each method's 10 seeds as one seed-batched model, the two
#    groups in two processes on the one GPU. Target: <= 180 s.
table 180 molbace_table --method erm hma --seeds 10 --jobs 2
# 4. The headline speed run: OGB's GIN on ogbg-molhiv, ERM and HMA on the
#    standard loop, the fast path and the static path (padded batches +
#    torch.compile 'reduce-overhead' = CUDA graphs), steps then whole epochs
#    (HMA/ERM per epoch on the static path: target <= 1.10).
#    Eval throughput is left out (measured in the first GPU session; on the
#    static path it would time compilation).
bench 140 molhiv_gin ogbg-molhiv GIN --paths pyg fast static \
    --methods erm hma --steps 150 --warmup 40 --epochs 1 --eval-repeats 0

echo
echo "== results in $OUTDIR"
ls -lR "$OUTDIR"
exit $status

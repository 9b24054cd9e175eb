#!/usr/bin/env bash
# cnnbench's GPU measurements: full recipes, run side by side on one CUDA device.
#
#   tests/benchmarks/gpu_suite.sh mnist   # mnist_gap through the memory and the ffcv loader
#   tests/benchmarks/gpu_suite.sh cifar   # the five CIFAR-10 configurations + a CIFAR-10 ffcv run
#
# The networks are small (8k-105k parameters) and leave most of a GPU idle, so the jobs
# of a group share it: accuracies are unaffected, but the img/s in their records are
# those of a shared GPU. For loader throughput alone, run the pytest-benchmark suite
# (tests/benchmarks/test_loader_throughput.py) on its own. Records and weights go to
# $RESULTS (default results/), one log per job to $RESULTS/logs/. Each job is stopped
# after $JOB_SECONDS (default: none) and then leaves no record. $SEEDS (default "0", e.g.
# "1 2 3") runs every job once per seed, all at once. On a copy of the tree whose .git is
# absent or stale, set GIT_DIR=/nonexistent and CNNBENCH_GIT_COMMIT to the commit sent.
set -uo pipefail

RESULTS=${RESULTS:-results}
LOGS="$RESULTS/logs"
JOB_SECONDS=${JOB_SECONDS:-0}
BENCH=${BENCH:-bench}
mkdir -p "$LOGS"

SEEDS=${SEEDS:-0}

job() {  # job NAME BENCH-RUN-ARGS...
    local name=$1 seed
    shift
    for seed in $SEEDS; do
        (
            timeout --signal=INT "$JOB_SECONDS" "$BENCH" run --no-progress --device cuda --threads 2 \
                --results-dir "$RESULTS" --seed "$seed" "$@" >"$LOGS/$name-s$seed.log" 2>&1
            echo "$name seed $seed: exit $? after ${SECONDS}s"
        ) &
    done
}

case "${1:-}" in
mnist)
    job mnist_gap-memory --model mnist_gap
    job mnist_gap-ffcv --model mnist_gap --loader ffcv --workers 4
    ;;
cifar)
    for norm in batch group layer; do
        job "cifar_3block-$norm" --model cifar_3block --normalizer "$norm"
    done
    job cifar_dilated_res --model cifar_dilated_res
    # seed 003's albumentations pipeline runs per sample, so it gets DataLoader workers
    job cifar_c13 --model cifar_c13 --loader torchvision --workers 6
    job cifar_dilated_res-ffcv --model cifar_dilated_res --loader ffcv --workers 2
    ;;
*)
    echo "usage: $0 mnist|cifar" >&2
    exit 2
    ;;
esac
wait
for log in "$LOGS"/*.log; do
    echo "== $log"
    grep -E "^epoch +[0-9]+ |final|error|Error" "$log" | tail -4
done

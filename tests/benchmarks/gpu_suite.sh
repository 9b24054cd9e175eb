#!/usr/bin/env bash
# cnnbench's GPU measurements: full recipes as one `bench sweep` on the CUDA device(s).
#
#   tests/benchmarks/gpu_suite.sh mnist   # mnist_gap through the memory and the ffcv loader
#   tests/benchmarks/gpu_suite.sh cifar   # the five CIFAR-10 configurations + a CIFAR-10 ffcv run
#
# The grids are tests/benchmarks/sweeps/gpu_*.toml. The networks are small (8k-105k
# parameters) and leave most of a GPU idle, so $JOBS_PER_GPU jobs (default 6) share each GPU:
# accuracies are unaffected, but the img/s in their records are those of a shared GPU, and
# each record says how many jobs shared it (launch.jobs_on_device). $SEEDS (default 1; "3"
# or "0,1,2") runs every configuration once per seed. Records and weights go to $RESULTS
# (default results/); repeating the command runs only the jobs without a record. Extra
# arguments go to `bench sweep` (e.g. --launcher ray --ray-gpus-per-job 0.2). On a copy of the
# tree whose .git is absent or stale, set GIT_DIR=/nonexistent and CNNBENCH_GIT_COMMIT.
set -euo pipefail
cd "$(dirname "$0")/../.."

case "${1:-}" in
mnist | cifar) suite=$1 ;;
*)
    echo "usage: $0 mnist|cifar [bench sweep options]" >&2
    exit 2
    ;;
esac
shift
# jobs per GPU is the local launcher's option; another launcher (--launcher ray) has its own
per_gpu=(--local-jobs-per-gpu "${JOBS_PER_GPU:-6}")
[[ " $* " == *" --launcher "* ]] && per_gpu=()
exec "${BENCH:-bench}" sweep --file "tests/benchmarks/sweeps/gpu_$suite.toml" --device cuda \
    --seeds "${SEEDS:-1}" "${per_gpu[@]}" --results-dir "${RESULTS:-results}" --no-progress "$@"

#!/usr/bin/env bash
# The figures of issue 14, on a quiet machine (they time things: nothing else should run):
#   1. LeNet-5 training throughput, 2 ranks x 1 thread against 1 rank x 1 thread (3 runs each,
#      alternating; the median of each, and their ratio);
#   2. test accuracy of `mpiexec -n 2 python -m minidl.examples.mnist` on the full MNIST set.
#   bash tools/dist_bench.sh [MNIST_DIR]      (default: $MINIDL_DATA/mnist, else ../shared/data/mnist)
# PYTHON picks the interpreter (default: python); its environment's mpiexec (the mpich wheel's)
# is used when there is one, else the one on PATH.
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
PYBIN=$(dirname "$(command -v "$PY")")
MPIEXEC=$PYBIN/mpiexec
[ -x "$MPIEXEC" ] || MPIEXEC=$(command -v mpiexec)
DATA=${1:-${MINIDL_DATA:+$MINIDL_DATA/mnist}}
DATA=${DATA:-../shared/data/mnist}
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
if "$MPIEXEC" --version 2>/dev/null | grep -q "Open MPI"; then
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
fi
median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
rate() { sed -n 's/.*: \([0-9.]*\) images\/s.*/\1/p'; }

echo "=== 1. LeNet-5 training throughput (batch 64 per rank, 200 timed steps), $(date -u +%FT%TZ)"
echo "$(nproc) cores; $("$MPIEXEC" --version 2>&1 | head -1)"
one=(); two=()
for i in 1 2 3; do
  line=$(NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 "$PY" tools/dist_throughput.py)
  echo "  $line"; one+=("$(echo "$line" | rate)")
  line=$(NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 \
         "$MPIEXEC" -n 2 "$PY" tools/dist_throughput.py)
  echo "  $line"; two+=("$(echo "$line" | rate)")
done
m1=$(printf '%s\n' "${one[@]}" | median); m2=$(printf '%s\n' "${two[@]}" | median)
echo "FIGURE throughput: 1 rank x 1 thread $m1 images/s; 2 ranks x 1 thread $m2 images/s;" \
     "ratio $(awk -v a="$m2" -v b="$m1" 'BEGIN {printf "%.2f", a / b}')x (target >= 1.7x)"

echo "=== 2. mpiexec -n 2 python -m minidl.examples.mnist --data $DATA, $(date -u +%FT%TZ)"
out=$(mktemp -d)
start=$(date +%s)
"$MPIEXEC" -n 2 "$PY" -m minidl.examples.mnist --data "$DATA" --no-progress \
  --metrics-json "$out/mnist_dp.json" | tee "$out/mnist_dp.log"
acc=$(grep "^test accuracy:" "$out/mnist_dp.log" | tail -1 | awk '{print $3}')
echo "FIGURE mnist data-parallel (2 ranks, LeNet-5 defaults): test accuracy $acc," \
     "$(( $(date +%s) - start )) s wall (target >= 0.9900); metrics in $out/mnist_dp.json"

#!/usr/bin/env bash
# GPU checks of minidl.distributed (issue 14) on a machine with one GPU, CuPy and mpiexec
# (Open MPI or MPICH) on PATH; about a minute. PASS/FAIL per line, exit status 1 on a failure.
#   bash tools/dist_gpu_check.sh [OUTDIR]
set -u
cd "$(dirname "$0")/.."
# Open MPI refuses root and more ranks than cores unless told; harmless for MPICH
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
timeout 240 "$PY" tools/dist_gpu_check.py "${1:-$(mktemp -d)}"

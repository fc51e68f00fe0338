#!/bin/bash
# run.sh AREA BUILD — runs the benchmark of one area (runtime, store, e2e,
# peers): bench/AREA.sh does the work and prints "RESULT key value unit"
# lines. Benchmarks never run inside `make test`.
set -eu
area=$1 build=${2:-build/bench}
script="$(dirname "$0")/$area.sh"
if [ ! -x "$script" ]; then
    echo "bench: no benchmark for area '$area' ($script)" >&2
    exit 2
fi
export JOBQ_BUILD=$(cd "$build" && pwd)
export JOBQ_SRC=$(cd "$(dirname "$0")/.." && pwd)
echo "# bench $area on $(nproc) CPUs, $(uname -r), $(date -u +%FT%TZ)"
exec "$script"

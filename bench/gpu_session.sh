#!/usr/bin/env bash
# Every GPU measurement this project reports, in two parts that each fit one 10-minute command.
#
#   bash bench/gpu_session.sh 1 OUT_DIR   # CUDA tests, DSE on CUDA, VAR d16/d30 speed table, VAR profiles
#   bash bench/gpu_session.sh 2 OUT_DIR   # VAR with --compile, Infinity-2B, HART-0.7B
#
# Each step has its own time limit, so one slow step cannot starve the others; each step's
# output goes to OUT_DIR/<part>.log (and the profiles to OUT_DIR/var_profiles.tgz), and the
# tables are printed again at the end. Runs from the repository root with the machine's own
# torch (PYTHONPATH=. is set here). Tables go into docs/benchmarks.md and the README.
set -u
if [ $# -ne 2 ] || { [ "$1" != 1 ] && [ "$1" != 2 ]; }; then
    echo "usage: bash bench/gpu_session.sh 1|2 OUT_DIR" >&2
    exit 2
fi
part=$1 out=$2
mkdir -p "$out"
export PYTHONPATH=.${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
log="$out/part$part.log"
: >"$log"

step() {  # step SECONDS DESCRIPTION COMMAND...
    local limit=$1 what=$2
    shift 2
    echo "=== $what (limit ${limit}s): $*" | tee -a "$log"
    local t0=$SECONDS
    timeout "$limit" "$@" >>"$log" 2>&1
    echo "=== exit $? after $((SECONDS - t0))s: $what" | tee -a "$log"
}

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$log"
$py -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" | tee -a "$log"

case $part in
1)
    step 90 "CUDA tests (DSE and guidance on the GPU)" $py -m pytest -q -p no:cacheprovider tests/test_dse.py tests/test_guidance.py
    step 90 "DSE reference vs fast path on CUDA" $py bench/bench_dse.py --devices cuda
    step 300 "VAR d16/d30 speed table (B 1 16 64, fp32 and bf16)" $py bench/bench_var.py
    step 90 "VAR bf16 B=64 profiles" $py bench/bench_var.py --batches 64 --dtypes bf16 --steps 1 --profile "$out/prof"
    [ -d "$out/prof" ] && tar czf "$out/var_profiles.tgz" -C "$out" prof && rm -r "$out/prof"
    ;;
2)
    step 240 "VAR bf16 with torch.compile'd MLPs" $py bench/bench_var.py --batches 16 64 --dtypes bf16 --compile
    step 150 "Infinity-2B 1024 px bf16 (B 1 4)" $py bench/bench_infinity.py
    step 150 "HART-0.7B 1024 px bf16 (B 1 4)" $py bench/bench_hart.py --preset 0.7b-1024 --dtype bf16 --batches 1 4
    ;;
esac

echo
echo "### tables (full output in $log)"
grep -E '^\||^=== exit|^wall ' "$log"

#!/usr/bin/env bash
# Infinity text-to-image with SSG. Every flag goes to Infinity/tools/run_infinity.py (see --help).
#   bash scripts/infinity_t2i.sh --prompt "an astronaut riding a horse" --beta 0.5 --compare
#   bash scripts/infinity_t2i.sh --prompt_file prompts.txt --outdir outputs/mjhq --num_samples 1
# Defaults: infinity_2b at 1024 px (files downloaded on first use), cfg 4, tau 0.5, top-k 900,
# top-p 0.97, seed 0, beta 0.5. Several GPUs: torchrun --nproc_per_node N -m Infinity.tools.run_infinity ...
# Runs in the caller's folder: relative paths (--save_file, --outdir, --text_encoder_ckpt, ...) are the caller's.
# The repository goes on PYTHONPATH (no install needed); $PYTHON picks the interpreter (default: python).
set -euo pipefail
ROOT="$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$ROOT/Infinity/tools/run_infinity.py" "$@"

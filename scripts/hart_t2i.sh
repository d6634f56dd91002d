#!/usr/bin/env bash
# HART text-to-image with SSG. Every flag goes to hart/sample.py (`python -m hart.sample`, see --help). Examples:
#   bash scripts/hart_t2i.sh --prompt "a red heart on a white table" --beta 0.5 --compare
#   bash scripts/hart_t2i.sh --prompt_file MJHQ-30K/meta_data.json --no-more_smooth --beta 0.5 \
#        --sample_folder_dir samples/mjhq_ssg --npz          # FID evaluation: more_smooth off
#   torchrun --nproc_per_node 8 -m hart.sample --prompt_file ...   # several GPUs
# The checkpoints (mit-han-lab/hart-0.7b-1024px, mit-han-lab/Qwen2-VL-1.5B-Instruct) are downloaded on first
# use; fetch them ahead with `python scripts/download.py --model hart-0.7b`, then run with HF_HUB_OFFLINE=1.
# Runs in the caller's folder: relative paths (--sample_folder_dir, --prompt_file, ...) are the caller's.
# The repository goes on PYTHONPATH (no install needed); $PYTHON picks the interpreter (default: python).
set -euo pipefail
ROOT="$(CDPATH= cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd)"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
exec "${PYTHON:-python}" "$ROOT/hart/sample.py" "$@"

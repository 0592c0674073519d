#!/usr/bin/env bash
# Every GPU-sized run of the README at once on one CUDA machine, under one wall-clock budget.
#
#   benchmarks/gpu_suite.sh OUT DATA [SECONDS]
#
# DATA holds ptb/ and wikitext-2/. First the CUDA tests (tests/neural/test_cuda.py): if they fail,
# the script stops at once. Then, concurrently (one process per run, one CPU
# thread each; CUDA MPS lets their small kernels share the GPU when the driver offers it): the PTB
# experiments of benchmarks/ptb_neural.py (Zaremba small and medium, GRU, tanh RNN, NNLM, deep vs
# residual, bidirectional), the WikiText-2 LSTM and NNLM, and the LSTM ablation study on PTB and on
# the synthetic long-range language. At SECONDS (default 480) after the start every run still going
# gets Ctrl-C (each saves a resumable checkpoint and its metrics log). Then (about a minute more):
# the bidirectional cloze scores and the NNLM + MKN-5 mixtures of the finished runs, and
#   OUT/results.tgz      logs, metrics, configs, curves, results.json of everything (no checkpoints)
#   OUT/emb_NAME.npz     input (and output) embeddings of the runs the embedding study uses, float16
set -u
OUT=${1:?usage: gpu_suite.sh OUT DATA [SECONDS]}
DATA=${2:?usage: gpu_suite.sh OUT DATA [SECONDS]}
BUDGET=${3:-480}
DEVICE=${DEVICE:-cuda}  # DEVICE=cpu rehearses the script on a machine without a GPU
START=$(date +%s)
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
R="$OUT/suite"
mkdir -p "$R"
python3 -c "import sys, torch; print(sys.version.split()[0], torch.__version__, torch.version.cuda,
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')" | tee "$R/env.txt"
nvidia-smi >"$R/nvidia-smi.txt" 2>&1

# CUDA MPS: without it, processes time-slice the GPU and many small runs barely overlap.
if command -v nvidia-cuda-mps-control >/dev/null; then
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/mps-log
  mkdir -p /tmp/mps-pipe /tmp/mps-log
  if nvidia-cuda-mps-control -d && timeout 60 python3 -c \
      "import torch; assert torch.ones(2, device='cuda').sum().item() == 2"; then
    echo "MPS on" | tee -a "$R/env.txt"
  else
    echo quit | nvidia-cuda-mps-control 2>/dev/null
    unset CUDA_MPS_PIPE_DIRECTORY CUDA_MPS_LOG_DIRECTORY
    echo "MPS failed; plain time-slicing" | tee -a "$R/env.txt"
  fi
else
  echo "no MPS; plain time-slicing" | tee -a "$R/env.txt"
fi

# Smoke: the CUDA tests and one short training run; stop here if they fail.
timeout 150 python3 -m pytest -p no:cacheprovider tests/neural/test_cuda.py \
  >"$R/pytest_cuda.log" 2>&1
rc=$?
echo "CUDA tests: exit $rc ($(grep -E "passed|failed|skipped" "$R/pytest_cuda.log" | tail -1))" \
  | tee -a "$R/env.txt"
if [ "$DEVICE" != cpu ] && [ $rc -ne 0 ]; then
  tail -40 "$R/pytest_cuda.log"; tar -czf "$OUT/results.tgz" -C "$OUT" suite; exit 1
fi

PTB="python3 benchmarks/ptb_neural.py --data $DATA --out $R/ptb_neural --threads 1"
left() { echo $((BUDGET - ($(date +%s) - START))); }
job() {  # job NAME COMMAND...: run in the background until the budget is spent, then Ctrl-C
  local name=$1; shift
  timeout -s INT -k 40 "$(left)" "$@" >"$R/$name.out" 2>&1 &
}
job medium $PTB zaremba_medium --extra --device $DEVICE
job lstm $PTB zaremba_lstm --extra --device $DEVICE
job gru10 $PTB zaremba_gru_lr10 --extra --device $DEVICE
job gru208 $PTB gru_equal_params --extra --device $DEVICE
job rnn $PTB zaremba_rnn --extra --device $DEVICE
job nnlm $PTB nnlm nnlm_wide --extra --device $DEVICE
job deep $PTB deep_residual --runs rnn_tanh_4layer --extra --device $DEVICE
job residual $PTB deep_residual --runs rnn_tanh_4layer_residual --extra --device $DEVICE
job bi_forward $PTB bidirectional --runs lstm_forward --extra --device $DEVICE
job bi $PTB bidirectional --runs lstm_bidirectional --extra --device $DEVICE
job wt2_lstm $PTB wt2_lstm --extra --device $DEVICE
job wt2_nnlm $PTB wt2_nnlm --extra --device $DEVICE
job ablate_ptb python3 -m lmlab.cli ablate --data "$DATA/ptb" -o "$R/ablate_ptb" --jobs 4 \
  --device $DEVICE
job ablate_synth python3 -m lmlab.cli ablate --synthetic -o "$R/ablate_synth" --jobs 2 \
  --device $DEVICE
wait
echo "runs ended at $(( $(date +%s) - START )) s" | tee -a "$R/env.txt"

# Summaries of whatever finished (an interrupted study still has its finished runs).
for study in ablate_ptb ablate_synth; do
  flag=$([ $study = ablate_synth ] && echo --synthetic || echo "--data $DATA/ptb")
  python3 -m lmlab.cli ablate $flag -o "$R/$study" --summary-only --device $DEVICE \
    >>"$R/$study.out" 2>&1
done
rm -rf "$R"/ablate_*/runs/*.pt
# Scores that need the checkpoints, which do not come back: cloze vs forward-only, and the
# mixtures of the NNLMs with a modified-KN 5-gram (EM weights on valid, scored on test).
P="$R/ptb_neural"
if [ -f "$P/lstm_forward.result.json" ] && [ -f "$P/lstm_bidirectional.result.json" ]; then
  python3 benchmarks/bidirectional_cloze.py "$P/lstm_forward.pt" "$P/lstm_bidirectional.pt" \
    --test "$DATA/ptb/test.txt" --json "$R/bidirectional_cloze.json" >"$R/cloze.out" 2>&1
fi
python3 -m lmlab.cli ngram train "$DATA/ptb/train.txt" --order 5 --smoothing mkn \
  -o /tmp/mkn5.lm >"$R/mixtures.out" 2>&1
for n in nnlm_w5 nnlm_w5_wide nnlm_w4_wide; do
  [ -f "$P/$n.result.json" ] || continue
  python3 -m lmlab.cli interpolate /tmp/mkn5.lm "$P/$n.pt" --valid "$DATA/ptb/valid.txt" \
    -o "$R/mix_mkn5_$n.json" >>"$R/mixtures.out" 2>&1 &&
  python3 -m lmlab.cli eval "$R/mix_mkn5_$n.json" "$DATA/ptb/test.txt" --json \
    >"$R/mix_mkn5_$n.test.json" 2>>"$R/mixtures.out"
done
python3 - "$R/ptb_neural" "$OUT" <<'EOF' >"$R/embeddings_export.log" 2>&1
import sys
from pathlib import Path

import numpy as np

from lmlab.analysis.embeddings import checkpoint_embeddings

src, out = Path(sys.argv[1]), Path(sys.argv[2])
for name in ("lstm_small", "nnlm_w5", "nnlm_w5_wide", "wt2_lstm", "wt2_nnlm_w5"):
    ckpt = src / f"{name}.pt"
    if not ckpt.exists():
        print(name, "missing")
        continue
    for which in ("input", "output") if "lstm" in name else ("input",):
        try:
            emb = checkpoint_embeddings(ckpt, which)
        except Exception as err:  # noqa: BLE001 - report and go on
            print(name, which, err)
            continue
        np.savez(out / f"emb_{name}_{which}.npz", words=np.array("\n".join(emb.words)),
                 vectors=np.asarray(emb.vectors, dtype=np.float16))
        print(name, which, np.asarray(emb.vectors).shape)
EOF
find "$R" -name "*.pt" -delete
tar -czf "$OUT/results.tgz" -C "$OUT" suite
echo "done at $(( $(date +%s) - START )) s; $(ls "$OUT")"

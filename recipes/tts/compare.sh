#!/usr/bin/env bash
# The TTS comparison in one command: SFT (the committed checkpoint) against three runs on the SAME
# pairs and budget -- SFT continued on the chosen responses, LPO, and DPO -- judged side by side on
# the held-out prompts (runs/tts/eval/table.md). Every stage is resumable: rerun to continue.
#   bash recipes/tts/compare.sh            (PY=... to pick the interpreter; PROCS=2 for two DDP processes)
set -euo pipefail
PY=${PY:-python}
PROCS=${PROCS:-2}
R=recipes/tts/tiny.yaml
if [ "$PROCS" -gt 1 ]; then
  RUN="env OMP_NUM_THREADS=1 $PY -m torch.distributed.run --nproc_per_node $PROCS -m lpo_speech.cli"
else
  RUN="$PY -m lpo_speech.cli"
fi
$PY -m lpo_speech.cli make-tts-data --out runs/tts/data --n-train 3000 --n-dev 100 --n-test 200
$RUN build-pairs $R
$RUN train $R --resume                                                     # LPO (lpo-ste)
$RUN train $R --resume loss.type=sigmoid train.out_dir=runs/tts/dpo        # DPO, same pairs/steps
$RUN train $R --resume loss.type=sft loss.sft_weight=1.0 loss.gamma=0.0 train.out_dir=runs/tts/sft-cont
$PY -m lpo_speech.cli eval --wer --batch-size 32 --data runs/tts/data/test_prompts.jsonl --out runs/tts/eval \
  --model assets/tts-tiny-sft --label sft --model runs/tts/sft-cont/model --label sft-cont \
  --model runs/tts/lpo/model --label lpo --model runs/tts/dpo/model --label dpo
cat runs/tts/eval/table.md

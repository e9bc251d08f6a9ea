"""USCL pretraining and the POCUS benchmark, in plain PyTorch.

resnet (ResNet-18 + projection + classifier, reference layout), augment (batched
augmentations on uint8 tensors), data (a release's frames decoded once), spg (sample
pair generation), losses (NT-Xent, semi-supervised CE), pretrain (USCL and the no-SPG
baseline), finetune (the fold protocol), benchmark (the whole run and its files),
checkpoint (safetensors; weights-only loading of foreign files), distributed (ranks under
torchrun, the global batch, synchronised batch norm, the launcher), progress (per-stage
lines with an ETA). The card's Benchmark section lives with the release contract
(us4.contract.benchmark_card), so that nothing that reads a release imports the trainer.
Heavy modules are imported by whoever needs them.
"""
from __future__ import annotations

import os

# OpenMP worker threads that spin while they wait starve as soon as another process
# shares the cores: on this 2-core machine under load a fine-tuning fold ran 2-4x slower
# with 2 spinning threads than with 1; with passive waiting, 2 threads are never slower.
# Only effective when torch is imported after this package; a user's setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

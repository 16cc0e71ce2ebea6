"""Fine-tuning encoders on labelled multilingual tasks, with gradual magnitude pruning.

After Ogueji et al. (2022, "Intriguing Properties of Compression on
Multilingual Models"): fine-tune a multilingual encoder while pruning it
gradually, then score it in every language, on clean and perturbed test sets.

    from babelprune.finetune import FinetuneConfig, finetune
    from babelprune.prune.gradual import GMPConfig

    config = FinetuneConfig(gmp=GMPConfig.for_steps(0.7, total_steps=16))  # the default run: 16 steps
    result = finetune("e5-small", "bible-genre", config, out=Path("runs/gmp70"))
"""

from babelprune.finetune.config import FinetuneConfig, planned_steps
from babelprune.finetune.heads import Batch, TaskHead, encode, predict
from babelprune.finetune.sweep import run_sweep, sweep_configs
from babelprune.finetune.trainer import finetune, plan_runs

__all__ = [
    "Batch",
    "FinetuneConfig",
    "TaskHead",
    "encode",
    "finetune",
    "plan_runs",
    "planned_steps",
    "predict",
    "run_sweep",
    "sweep_configs",
]

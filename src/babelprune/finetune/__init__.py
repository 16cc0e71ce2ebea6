"""Fine-tuning encoders on labelled multilingual tasks, with gradual magnitude pruning.

After Ogueji et al. (2022, "Intriguing Properties of Compression on
Multilingual Models"): fine-tune a multilingual encoder while pruning it
gradually, then score it in every language, on clean and perturbed test sets.

    from babelprune.finetune import FinetuneConfig, finetune, load_finetuned_head, predict
    from babelprune.prune.gradual import GMPConfig

    config = FinetuneConfig(gmp=GMPConfig.for_steps(0.7, total_steps=16))  # the default run: 16 steps
    result = finetune("e5-small", "bible-genre", config, out=Path("runs/gmp70"))
    saved = load_finetuned_head("runs/gmp70/runs/en/model")  # each run's model, with its task head
    predict(saved.head, saved.loaded.tokenizer, examples, prefix=saved.info["text_prefix"])
"""

from babelprune.finetune.config import FinetuneConfig, planned_steps
from babelprune.finetune.heads import Batch, TaskHead, encode, predict
from babelprune.finetune.saved import FinetunedModel, load_finetuned_head
from babelprune.finetune.trainer import finetune, plan_runs

__all__ = [
    "Batch",
    "FinetuneConfig",
    "FinetunedModel",
    "TaskHead",
    "encode",
    "finetune",
    "load_finetuned_head",
    "plan_runs",
    "planned_steps",
    "predict",
]

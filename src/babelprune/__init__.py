"""babelprune: prune multilingual language models and measure the cost per language.

    import babelprune

    model = babelprune.load_model("gemma3-270m")
    calibration = babelprune.calibrate(model, "bible", ["en", "fr", "sw"])
    outcome = babelprune.prune(model, babelprune.PruneConfig(method="mwanda", sparsity=0.5), calibration)
    babelprune.save_pruned(model, outcome, "pruned-mwanda")

The verbs and configs below are imported on first use (PEP 562), so
`import babelprune` and `babelprune --help` do not pay for torch and
transformers.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

from babelprune.version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "calibrate": "babelprune.api",
    "evaluate": "babelprune.api",
    "export_gguf": "babelprune.api",
    "get_corpus": "babelprune.api",
    "load_model": "babelprune.api",
    "open_offloaded": "babelprune.api",
    "prune": "babelprune.api",
    "prune_structured": "babelprune.api",
    "prune_offloaded": "babelprune.api",
    "save_pruned": "babelprune.api",
    "save_trimmed": "babelprune.api",
    "trim_vocabulary": "babelprune.api",
    "write_report": "babelprune.report.html",
    "evaluate_gguf": "babelprune.api",
    "evaluate_model": "babelprune.api",
    "is_gguf_model": "babelprune.api",
    "measure_gguf_speeds": "babelprune.api",
    "export_model": "babelprune.api",
    "fetch_corpus": "babelprune.api",
    "finetune_to_folder": "babelprune.api",
    "measure_model_speeds": "babelprune.api",
    "model_aliases": "babelprune.api",
    "prune_to_folder": "babelprune.api",
    "shrink_to_folder": "babelprune.api",
    "slice_to_folder": "babelprune.api",
    "task_catalog": "babelprune.api",
    "train_dynamic_to_folder": "babelprune.api",
    "trim_to_folder": "babelprune.api",
    "write_speed_reports": "babelprune.api",
    "CalibrationSpec": "babelprune.api",
    "DynamicConfig": "babelprune.api",
    "FinetuneConfig": "babelprune.api",
    "PruneConfig": "babelprune.api",
    "StructuredConfig": "babelprune.api",
    "TrimConfig": "babelprune.api",
    "EvalResult": "babelprune.records.eval",
    "BabelpruneError": "babelprune.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:  # for type checkers and editors; at run time `__getattr__` imports on demand
    from babelprune.api import (
        PruneConfig, StructuredConfig, TrimConfig, calibrate, evaluate, export_gguf, get_corpus, load_model,
        open_offloaded, prune, prune_offloaded, prune_structured, save_pruned, save_trimmed, trim_vocabulary,
    )
    from babelprune.report.html import write_report
    from babelprune.errors import BabelpruneError
    from babelprune.records.eval import EvalResult


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'babelprune' has no attribute '{name}'")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


class _Package(types.ModuleType):
    """The babelprune package, whose verb `prune` shares its name with the subpackage `babelprune.prune`.

    Importing a submodule binds it to its parent's attribute of the same name,
    which would hide the verb as soon as anything imports `babelprune.prune.*`.
    That binding is skipped for exported names: the subpackage stays in
    sys.modules, so `import babelprune.prune.engine` and `from
    babelprune.prune.engine import prune` still find it. The one form that
    cannot is `import babelprune.prune.engine as engine` (it walks the
    attributes, and `babelprune.prune` is the verb): write `from
    babelprune.prune import engine` instead. The same holds for `evaluate`.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _EXPORTS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

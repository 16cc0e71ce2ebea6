"""Where command-line flags meet config fields: the one table per verb, and `--config FILE`.

Each verb's flags are listed here with the config field they set (a dotted
path into nested configs: `--refit-damp` sets `reconstruct.damp`). The CLI
builds its configs only through `config_from_flags`, so a flag and a config
field cannot disagree; tests/test_verb_configs.py checks that every flag's
default is its field's default.

`--config FILE` gives the whole config of a verb as a YAML or JSON file (the
same mapping an experiment file's entry holds). A mapped flag typed together
with `--config` is refused in one sentence rather than silently overriding
or being overridden; the flags that are not part of the config (the model,
the calibration data, the output folder...) still apply.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from babelprune.errors import BabelpruneError

# CLI parameter name -> config field path. `reconstruct` is a switch: the refit's
# own fields apply only when it is on (PruneConfig.reconstruct is None when off).
PRUNE_FLAGS: dict[str, str] = {
    "method": "method", "sparsity": "sparsity", "pattern": "pattern", "allocation": "allocation",
    "setting": "setting", "order": "order", "calib_batch": "calib_batch", "seed": "seed",
    "balance": "balance", "language_weights": "language_weights",
    "alpha": "mwanda.alpha", "beta": "mwanda.beta", "language_aware": "mwanda.language_aware",
    "activation_prob": "mwanda.activation_prob", "score": "mwanda.score",
    "reconstruct": "reconstruct",
    "refit_solver": "reconstruct.solver", "refit_damp": "reconstruct.damp",
    "refit_shrink": "reconstruct.shrink", "refit_iterations": "reconstruct.iterations",
}
STRUCTURED_FLAGS: dict[str, str] = {
    "structured": "units", "importance": "importance", "sparsity": "sparsity", "setting": "setting",
    "gqa": "gqa", "ranking": "ranking",
}
TRIM_FLAGS: dict[str, str] = {
    "langs": "languages", "corpus": "corpus", "min_count": "min_count", "keep_reserved": "keep_reserved",
}
FINETUNE_FLAGS: dict[str, str] = {
    "mode": "mode", "source_lang": "source_lang", "langs": "languages", "lr": "lr", "batch_size": "batch_size",
    "epochs": "epochs", "max_steps": "max_steps", "seed": "seed", "perturbations": "perturbations",
    "max_train": "max_train_examples", "max_eval": "max_eval_examples", "checkpoint_every": "checkpoint_every",
    "gmp_final": "gmp.final_sparsity", "gmp_scope": "gmp.scope", "gmp_embeddings": "gmp.include_embeddings",
    "gmp_start": "gmp.start", "gmp_end": "gmp.end", "gmp_interval": "gmp.interval",
}
DYNAMIC_FLAGS: dict[str, str] = {
    "levels": "levels", "steps": "steps", "importance": "importance", "samples_per_step": "samples_per_step",
    "distill": "distill", "seed": "seed",
}
SWITCHES = {"reconstruct"}  # flag -> a nested config present (True) or None (False)
# Nested config -> the flag whose zero leaves it out (None): --gmp-final 0 is the dense run, with no schedule.
ABSENT_WHEN_ZERO: dict[str, str] = {"gmp": "gmp_final"}


def _language_weights(text: str | None) -> dict[str, float]:
    from babelprune.prune.balance import parse_language_weights

    return parse_language_weights(text)


def _language_list(text: str | None) -> list[str] | None:
    from babelprune.data.tasks import language_list

    return language_list(text) or None


def _levels(text: str) -> tuple[float, ...]:
    from babelprune.errors import BabelpruneError

    try:
        return tuple(float(level) for level in text.split(",") if level.strip())
    except ValueError:
        raise BabelpruneError(f"--levels {text!r} is not a comma-separated list of sparsities; give e.g. 0.3,0.5,0.7.") from None


# Flags whose text the config reads in another form.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "language_weights": _language_weights,
    "langs": _language_list,
    "perturbations": _language_list,  # "words,chars" -> ["words", "chars"]
    "levels": _levels,
}


def flag_name(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def nested_fields(flags: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The config mapping the flags' values spell (switched-off sections left out)."""
    data: dict[str, Any] = {}
    for parameter, path in flags.items():
        value = values[parameter]
        if parameter in SWITCHES:
            data[path] = {} if value else None
            continue
        head = path.split(".")[0]
        if head in SWITCHES and not values.get(head):
            continue  # a refit knob without --reconstruct: nothing to refit
        value = CONVERTERS[parameter](value) if parameter in CONVERTERS else value
        target = data
        for part in path.split(".")[:-1]:
            target = target.setdefault(part, {})
        target[path.split(".")[-1]] = value
    for section, parameter in ABSENT_WHEN_ZERO.items():
        if parameter in flags and not values[parameter]:
            data[section] = None
    return data


def config_from_flags(model, flags: Mapping[str, str], values: Mapping[str, Any]):
    """`model` (a pydantic config class) built from the command's flag values."""
    return model.model_validate(nested_fields(flags, values))


# How a parameter is spelled on the command line when it is not --<name> (and --no-<name> for switches).
SPELLINGS: dict[str, tuple[str, ...]] = {"keep_reserved": ("--keep-reserved", "--drop-reserved")}


def typed_flags(flags: Mapping[str, str], argv: list[str] | None = None) -> list[str]:
    """The mapped flags the user typed on the command line (read from sys.argv, as the shell passed them)."""
    import sys

    words = sys.argv[1:] if argv is None else argv
    typed = []
    for name in flags:
        spellings = SPELLINGS.get(name, (flag_name(name), "--no-" + name.replace("_", "-")))
        if any(word == spelling or word.startswith(spelling + "=") for word in words for spelling in spellings):
            typed.append(spellings[0])
    return typed


def refuse_typed_flags(config_file: Path, flags: Mapping[str, str]) -> None:
    """--config sets the whole config: a mapped flag beside it is one sentence, not a silent choice."""
    typed = typed_flags(flags)
    if typed:
        raise BabelpruneError(
            f"--config {config_file} sets the whole configuration, so {', '.join(typed)} would be ignored or "
            f"contradict it; drop {'it' if len(typed) == 1 else 'them'} from the command line or change the file."
        )


def verb_config(config_file: Path | None, model, flags: Mapping[str, str], values: Mapping[str, Any]) -> Any:
    """A verb's config: the whole of `--config FILE` (a mapped flag typed beside it is refused), else built from the flags."""
    if config_file is None:
        return config_from_flags(model, flags, values)
    refuse_typed_flags(config_file, flags)
    return read_verb_config(config_file, [model])


def read_verb_config(path: Path, models: list) -> Any:
    """The config in a YAML/JSON file: the first of `models` whose required fields the file has.

    (`prune --config` reads a PruneConfig, or a StructuredConfig when the file names `units`.)
    """
    from babelprune.configfile import read_config_file

    file = read_config_file(path)
    if not isinstance(file.data, dict):
        raise BabelpruneError(f"{file.name} line 1: the file must hold a mapping of config fields (key: value); fix it and run again.")
    fitting = [model for model in models if {name for name, info in model.model_fields.items() if info.is_required()} <= set(file.data)]
    return file.validate(fitting[0] if fitting else models[-1])

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

A flag that is typed but cannot change the result in the combination given
(`--alpha` with `--method wanda`, `--sparsity` with `--pattern 2:4`, a
`--refit-*` knob without `--reconstruct`...) is refused in one sentence
before any model is loaded (`prune_config_from_flags`,
`refuse_prune_options_without_effect`); a config file's fields are held to
the same rules by PruneConfig itself. Whether a flag was typed comes from
click (`given_parameters`), not from comparing its value with the default:
`--alpha 0.5` with wanda says as much as `--alpha 0.3`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
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
    "gqa": "gqa", "ranking": "ranking", "refit": "refit",
}
TRIM_FLAGS: dict[str, str] = {
    "langs": "languages", "corpus": "corpus", "min_count": "min_count", "keep_reserved": "keep_reserved",
    "keep_script_rank": "keep_script_rank", "keep_common": "keep_common",
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

    weights = parse_language_weights(text)
    if text is not None and not weights:  # typed, but naming no language: a slip, not "no weights"
        raise BabelpruneError(f"--language-weights {text!r} names no language; write them as sw=2,en=1, or leave the option out.")
    return weights


def _language_list(text: str | None) -> list[str] | None:
    from babelprune.data.tasks import language_list

    return language_list(text) or None


def name_list(text: str | None) -> list[str] | None:
    """'words,chars' -> ['words', 'chars']; a typed list of only separators is refused."""
    if text is None:
        return None
    names = list(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    if not names:
        raise BabelpruneError(f"{text!r} names nothing; give names separated by commas, such as words,chars.")
    return names


def _levels(text: str) -> tuple[float, ...]:
    import math

    try:
        levels = tuple(float(level) for level in text.split(",") if level.strip())
    except ValueError:
        levels = ()
    if not levels or not all(math.isfinite(level) for level in levels):
        raise BabelpruneError(f"--levels {text!r} is not a comma-separated list of sparsities; give e.g. 0.3,0.5,0.7.")
    return levels


def method_names() -> tuple[str, ...]:
    """The one-shot methods `--method` takes: those registered now (`babelprune.prune.methods.register`), in order.

    Light: the registry imports no torch, so `babelprune prune --help` stays fast.
    """
    from babelprune.prune.methods import METHODS

    return tuple(METHODS)


def language_option(text: str | None, option: str = "--langs") -> list[str] | None:
    """A comma-separated languages option as a list (None when not given); one naming no language is refused."""
    from babelprune.data.tasks import language_list

    return language_list(text, f"in {option}")


def number_list(text: str, kind: type, option: str, example: str) -> list:
    """A comma-separated list of numbers, or one sentence naming the part that is not one."""
    import math

    values = []
    for part in (part.strip() for part in text.split(",")):
        try:
            value = kind(part)
        except ValueError:
            raise BabelpruneError(f"{option} {text!r}: {part!r} is not a number; give numbers separated by commas, such as {option} {example}.") from None
        if not math.isfinite(value):
            raise BabelpruneError(f"{option} {text!r} holds a value that is not finite; give numbers such as {option} {example}.")
        values.append(value)
    return values


def task_options(items: Sequence[str] | None) -> dict[str, str | int]:
    """Repeated --task-option key=value items as a mapping (digits become numbers)."""
    options: dict[str, str | int] = {}
    for item in items or []:
        key, _, value = item.partition("=")
        if not value:
            raise BabelpruneError(f"Task option '{item}' is not of the form key=value.")
        options[key] = int(value) if value.isdigit() else value
    return options


# Flags whose text the config reads in another form.
CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "language_weights": _language_weights,
    "langs": _language_list,
    "perturbations": name_list,  # "words,chars" -> ["words", "chars"]
    "levels": _levels,
}


def flag_name(parameter: str) -> str:
    return "--" + parameter.replace("_", "-")


def nested_fields(flags: Mapping[str, str], values: Mapping[str, Any]) -> dict[str, Any]:
    """The config mapping the flags' values spell (switched-off sections left out)."""
    data: dict[str, Any] = {}
    for parameter, path in flags.items():
        value = values[parameter]
        if value is None and parameter not in CONVERTERS:
            continue  # a flag whose default is None leaves the field to the config's own default (e.g. PruneConfig.sparsity)
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


def given_parameters(values: Mapping[str, Any]) -> set[str]:
    """The command's parameters the user gave (typed, or from the environment), not left at their defaults.

    Read from click's record of where each value came from, inside a running command; without
    one (a command function called directly), from the flags in sys.argv.
    """
    context = _current_context()
    if context is None:
        return {name for name in values if typed_flags({name: name})}
    sources = {name: context.get_parameter_source(name) for name in values}
    # By name: typer's own copy of click and click itself each have a ParameterSource enum.
    return {name for name, source in sources.items() if source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")}


def _current_context():
    """The running command's click context, or None. Typer runs commands on its own copy of click
    (typer._click) in recent versions, on click itself in older ones: both are asked."""
    import importlib

    for module in ("typer._click.globals", "click.globals"):
        try:
            context = importlib.import_module(module).get_current_context(silent=True)
        except ImportError:
            continue
        if context is not None:
            return context
    return None


def _prune_flag(path: str) -> str | None:
    """The prune parameter that sets a PruneConfig field (None for fields no flag sets, e.g. lam)."""
    return next((parameter for parameter, field in PRUNE_FLAGS.items() if field == path), None)


def _cli_name(path: str, value: str | None) -> str:
    """A PruneConfig field as the command line spells it: --method wanda, --score ria, --reconstruct."""
    parameter = _prune_flag(path)
    name = flag_name(parameter) if parameter is not None else path
    return name if value is None else f"{name} {value}"


def _typed_spelling(parameter: str, value: Any) -> str:
    """The flag as typed: --no-language-aware for a switch turned off."""
    return "--no-" + parameter.replace("_", "-") if value is False else flag_name(parameter)


def prune_config_from_flags(values: Mapping[str, Any], given: set[str]):
    """The PruneConfig the prune flags spell; a typed flag whose field has no effect in it is one sentence.

    The config is first built keeping such fields, to name the flag rather than the field,
    then validated in full.
    """
    from babelprune.prune.config import KEEP_FIELDS_WITHOUT_EFFECT, PruneConfig

    data = nested_fields(PRUNE_FLAGS, values)
    lenient = PruneConfig.model_validate(data, context=KEEP_FIELDS_WITHOUT_EFFECT)
    for item in lenient.fields_without_effect():
        parameter = _prune_flag(item.field)
        if parameter is not None and parameter in given:
            raise BabelpruneError(item.sentence(_typed_spelling(parameter, values[parameter]), _cli_name))
    return PruneConfig.model_validate(data)


# Parameters of `prune` that only structured pruning reads, and those only one-shot pruning reads besides its config.
STRUCTURED_ONLY = ("importance", "gqa", "ranking", "refit")
ONESHOT_ONLY = ("language_budget", "budget_rounds", "holdout_samples", "save_format", "values", "activation_memory")
CALIBRATION_PARAMETERS = ("calib", "calib_langs", "samples", "seq_len", "seed")
SPELLED = {"save_format": "--format"}  # parameters whose flag is not --<name>


def _flag(parameter: str, values: Mapping[str, Any]) -> str:
    return SPELLED.get(parameter) or _typed_spelling(parameter, values.get(parameter))


def refuse_prune_options_without_effect(config, given: set[str], values: Mapping[str, Any]) -> None:
    """`prune`'s typed options that cannot change the result of `config`, refused in one sentence before any work.

    The config's own fields are checked when it is built (`prune_config_from_flags`, or
    PruneConfig for a --config file); these are the options around it: the structured or
    one-shot options of the other kind, the refit and language-budget knobs when those are
    off, the calibration text of a run that reads none, --values without a sparse copy.
    """
    from babelprune.prune.config import StructuredConfig
    from babelprune.prune.methods import METHODS

    def refuse(parameter: str, why: str, fix: str) -> None:
        raise BabelpruneError(f"{_flag(parameter, values)} {why}; {fix}.")

    typed = [parameter for parameter in values if parameter in given]
    if isinstance(config, StructuredConfig):
        how = "--structured" if values.get("config_file") is None else "a --config file with units"
        for parameter in typed:
            oneshot_field = parameter in PRUNE_FLAGS and parameter not in STRUCTURED_FLAGS and parameter not in CALIBRATION_PARAMETERS
            if parameter in ONESHOT_ONLY or oneshot_field:
                refuse(parameter, f"has no effect on structured pruning ({how}), which removes whole units",
                       f"drop it, or prune one-shot without {how}")
            if parameter in CALIBRATION_PARAMETERS and not config.needs_calibration:
                refuse(parameter, f"chooses calibration text, which --importance {config.importance} does not read",
                       "drop it, use another --importance, or add --refit")
            if parameter == "onload" and values.get("onload") == "sequential":
                refuse(parameter, f"moves one block at a time to the device for one-shot pruning, but {how} loads the "
                       "whole model there", f"drop it, or prune one-shot without {how}")
            if parameter == "gqa" and "heads" not in config.units:
                refuse(parameter, f"chooses how attention heads are removed, and --structured {','.join(config.units)} "
                       "removes none", "drop it or add heads to --structured")
        return
    _refuse_cwl_on_one_language(config, values)
    budget = values.get("language_budget") == "minimax"
    reads_statistics = METHODS[config.method].needs_calibration or config.reconstruct is not None
    reads_text = reads_statistics or config.allocation != "uniform" or budget
    saved = values.get("save_format") or ("hf" if config.setting == "per-language" else "both")
    for parameter in typed:
        if parameter in STRUCTURED_ONLY:
            refuse(parameter, "is an option of structured pruning and has no effect without --structured",
                   "drop it or add --structured UNITS")
        if parameter.startswith("refit_") and config.reconstruct is None:
            refuse(parameter, "sets the refit of the kept weights, which is off", "add --reconstruct or drop it")
        if parameter in ("budget_rounds", "holdout_samples") and not budget:
            refuse(parameter, "sets the language budget, which is off", "add --language-budget minimax or drop it")
        if parameter == "language_budget" and budget and not reads_statistics:
            refuse(parameter, f"changes how much each language counts in the calibration statistics, which --method "
                   f"{config.method} without --reconstruct does not read", "choose another --method or add --reconstruct")
        if parameter == "language_budget" and budget and config.balance == "tokens":
            refuse(parameter, "weighs calibration languages, but --balance tokens counts every token once",
                   "use --balance languages or drop --language-budget")
        if parameter == "values" and saved == "hf":
            default = "" if values.get("save_format") else ", the per-language setting's default,"
            refuse(parameter, f"sets the type of the sparse copy, which --format hf{default} does not write",
                   "add --format sparse or both, or drop --values")
        if parameter in CALIBRATION_PARAMETERS and not reads_text:
            refuse(parameter, f"chooses calibration text, which --method {config.method} with a uniform allocation "
                   "and no --reconstruct does not read", "drop it")
        if parameter == "activation_memory" and not reads_text:
            refuse(parameter, f"bounds the calibration activations, which --method {config.method} with a uniform "
                   "allocation and no --reconstruct does not compute", "drop it")


def _refuse_cwl_on_one_language(config, values: Mapping[str, Any]) -> None:
    """CWL compares calibration languages: one language in --calib-langs is refused here, before the model loads.

    mwanda runs CWL unless told otherwise, so the sentence names the way out.
    """
    languages = _language_list(values.get("calib_langs"))
    if config.allocation == "cwl" and languages is not None and len(languages) < 2:
        default = " (mwanda's default allocation)" if config.method == "mwanda" else ""
        raise BabelpruneError(
            f"CWL layer-wise sparsity{default} compares calibration languages, so it needs at least two in --calib-langs; "
            "give more, or add --allocation uniform."
        )


# How a parameter is spelled on the command line when it is not --<name> (and --no-<name> for switches).
SPELLINGS: dict[str, tuple[str, ...]] = {"keep_reserved": ("--keep-reserved", "--drop-reserved"), "save_format": ("--format",),
                                         "config_file": ("--config",)}


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

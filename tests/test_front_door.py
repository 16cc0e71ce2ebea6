"""The public verbs at the top level: `import babelprune; babelprune.prune(...)`, imported lazily."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import babelprune
import babelprune.api
import babelprune.errors
import babelprune.report.html
import babelprune.report.records


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout


def test_import_babelprune_does_not_import_torch_or_transformers():
    code = "import json, sys, babelprune; print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'babelprune'))))"
    loaded = json.loads(run_python(code))
    assert loaded == ["babelprune", "babelprune.version"]


def test_first_use_of_a_verb_imports_it():
    code = "import sys, babelprune; babelprune.load_model; print('torch' in sys.modules, 'babelprune.api' in sys.modules)"
    assert run_python(code).split() == ["True", "True"]


def test_top_level_names_are_the_api_objects():
    assert babelprune.load_model is babelprune.api.load_model
    assert babelprune.prune is babelprune.api.prune
    assert babelprune.PruneConfig is babelprune.api.PruneConfig
    assert babelprune.EvalResult is babelprune.report.records.EvalResult
    assert babelprune.BabelpruneError is babelprune.errors.BabelpruneError
    assert babelprune.write_report is babelprune.report.html.write_report


def test_prune_stays_the_verb_after_the_prune_subpackage_is_imported():
    code = ("import babelprune, babelprune.prune.engine, babelprune.api; from babelprune.prune import engine; "
            "print(babelprune.prune is babelprune.api.prune, engine.__name__)")
    assert run_python(code).split() == ["True", "babelprune.prune.engine"]


def test_every_api_verb_is_exported_and_listed():
    expected = set(babelprune.api.__all__) | {"EvalResult", "BabelpruneError"}
    assert expected <= set(babelprune.__all__)
    assert expected <= set(dir(babelprune))
    for name in babelprune.__all__:
        assert getattr(babelprune, name) is not None, name


def test_an_unknown_attribute_raises_attribute_error():
    with pytest.raises(AttributeError, match="no attribute 'lod_model'"):
        babelprune.lod_model  # noqa: B018
    assert not hasattr(babelprune, "api_internals")


def test_from_babelprune_import_a_verb():
    code = ("from babelprune import load_model, BabelpruneError; import babelprune.api, babelprune.errors; "
            "print(load_model is babelprune.api.load_model, BabelpruneError is babelprune.errors.BabelpruneError)")
    assert run_python(code).split() == ["True", "True"]

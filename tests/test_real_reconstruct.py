"""--reconstruct and reference-scale calibration on the real gemma3-270m and Bible text."""

import pytest

from babelprune.api import calibrate, evaluate, get_corpus, load_model, prune
from babelprune.prune.config import PruneConfig, ReconstructConfig
from babelprune.prune.engine import restore_linears, snapshot_linears

pytestmark = pytest.mark.real

CALIBRATION_LANGUAGES = ["en", "fr", "sw"]


@pytest.fixture(scope="module")
def gemma():
    return load_model("gemma3-270m")


def test_calibration_reaches_wandas_reference_size(gemma):
    # Wanda's reference calibration: 128 windows of 2048 tokens, here from one language's calibration split.
    calibration = calibrate(gemma, "bible", ["sw"], samples_per_language=128, seq_len=2048)
    assert tuple(calibration.ids.shape) == (128, 2048)
    assert calibration.describe()["tokens"] == 128 * 2048


def test_the_refit_lowers_every_layers_error_and_the_held_out_loss_of_calibrated_languages(gemma):
    bible = get_corpus("bible")
    calibration = calibrate(gemma, bible, CALIBRATION_LANGUAGES, samples_per_language=4, seq_len=128)
    dense = snapshot_linears(gemma.model)

    def held_out_bits():
        result = evaluate(gemma, bible, ["en", "sw"], max_tokens=128, progress=False)
        return {score.language: score.bits_per_byte for score in result.scores}

    prune(gemma, PruneConfig(method="wanda", sparsity=0.5), calibration, progress=False)
    plain = held_out_bits()
    restore_linears(gemma.model, dense)
    result = prune(gemma, PruneConfig(method="wanda", sparsity=0.5, reconstruct=ReconstructConfig()), calibration, progress=False)
    refitted = held_out_bits()
    restore_linears(gemma.model, dense)
    print("wanda", plain, "wanda + refit", refitted)  # shown with pytest -s
    assert len(result.refit_errors) == 18 * 7  # every linear of every block
    assert all(after < before for before, after in result.refit_errors.values())
    assert all(refitted[lang] < plain[lang] for lang in plain), (plain, refitted)

"""Test-session settings."""

import os

# Busy-waiting OpenMP threads collapse when the CPU is shared with other work;
# sleeping ones cost little here. Must be set before torch starts its thread pool.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


import pytest  # noqa: E402


@pytest.fixture(scope="module")
def tiny_bert_folder(tmp_path_factory) -> str:
    """A tiny BERT folder (random weights, seed 0) with a character tokenizer: the encoder of the fine-tuning tests."""
    from tests.tiny_models import tiny_model
    from tests.tiny_tokenizer import char_tokenizer

    folder = tmp_path_factory.mktemp("tiny-bert")
    tiny_model("bert").save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def other_tiny_folder(tmp_path_factory) -> str:
    """A tiny BERT folder with other random weights than the tests' usual one (seed 1)."""
    from tests.tiny_models import tiny_model
    from tests.tiny_tokenizer import char_tokenizer

    folder = tmp_path_factory.mktemp("other-tiny-bert")
    tiny_model("bert", seed=1).save_pretrained(folder)
    char_tokenizer().save_pretrained(folder)
    return str(folder)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models train ~20x faster on one thread than on two shared, busy cores (modules that train opt in)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _device_missing(name: str) -> str | None:
    """Why `name` cannot run here (the reason a test on it is skipped with), or None when it can."""
    import torch

    if name == "cuda" and not torch.cuda.is_available():
        return "no CUDA device on this machine (torch.cuda.is_available() is False)"
    if name == "mps":
        backend = getattr(torch.backends, "mps", None)
        if backend is None or not backend.is_available():
            return "no MPS device on this machine (torch.backends.mps.is_available() is False)"
    return None


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.cuda), pytest.param("mps", marks=pytest.mark.mps)])
def device(request) -> str:
    """A device a test runs on: the CPU always; CUDA and MPS where the machine has them, else skipped with the reason.

    Selected with `-m cuda` or `-m mps`; the CPU case is what every machine checks. Availability
    is looked at when the test runs, not when it is collected, so collecting needs no torch.
    """
    why = _device_missing(request.param)
    if why is not None:
        pytest.skip(why)
    return request.param

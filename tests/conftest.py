import os

import pytest


# Tests never reach the Hub: no downloads, no telemetry pings.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """The tiny Qwen2 and its character tokenizer, saved as a local folder (a stand-in for a Hub checkpoint)."""
    from tests.utils import tiny_model
    from trl_kimi.tasks import arithmetic

    path = tmp_path_factory.mktemp("base")
    tokenizer = arithmetic.make_tokenizer()
    tiny_model(tokenizer).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return str(path)

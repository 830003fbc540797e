import json
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(__file__).parent / "data" / "reference"
TINY_MODELS = ("tiny_ar", "tiny_mar", "tiny_mar4_gp")


def pytest_collection_modifyitems(config, items):
    """Tests marked `cuda` are skipped on machines without a GPU (collection never needs one)."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def reference_index():
    return json.loads((REFERENCE_DIR / "index.json").read_text())


@pytest.fixture(scope="session")
def official_state_dicts():
    return json.loads((REFERENCE_DIR / "official_state_dicts.json").read_text())

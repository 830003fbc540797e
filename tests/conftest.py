import json

import pytest
import torch

from repo import REFERENCE_DIR


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

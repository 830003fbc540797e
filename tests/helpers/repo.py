"""Where the repository's parts are, for tests in any folder."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
TESTS = ROOT / "tests"
REFERENCE_DIR = TESTS / "data" / "reference"
TINY_MODELS = ("tiny_ar", "tiny_mar", "tiny_mar4_gp")

"""Where the project's shared reference material lives: ../shared beside the repository (tests skip without it)."""
from pathlib import Path

SHARED = Path(__file__).resolve().parents[2] / "shared"
DATA = SHARED / "data"
SPEC = SHARED / "spec"

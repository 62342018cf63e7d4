"""Run against the installed distribution (`pip install plugins/nnspec-squeeze-excite`); from a bare
checkout, fall back to the source tree so `pytest plugins/nnspec-squeeze-excite/tests` works anyway."""
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("nnspec_squeeze_excite") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

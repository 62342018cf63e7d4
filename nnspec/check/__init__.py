"""Stage 2, check: passes that resolve and decide everything a run needs, producing the checked
spec (nnspec.spec). `check_source`, `check_file` and `load` drive them (checker.py)."""
from nnspec.check.checker import CheckResult, check_file, check_source, load

__all__ = ["CheckResult", "check_file", "check_source", "load"]

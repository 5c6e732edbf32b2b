"""`overparam study`: the experiments the papers lack, in one command, written up as a report."""

from .config import PRESETS, StudyConfig, preset
from .registry import SECTIONS
from .runner import StudyResult, run_study

__all__ = ["PRESETS", "SECTIONS", "StudyConfig", "StudyResult", "preset", "run_study"]

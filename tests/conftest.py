"""Shared test setup: ``tests/`` is importable (``models``, ``synthetic``), data paths, and fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
DATA = TESTS / "data"


@pytest.fixture
def tmp_profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of the committed device profiles (``HYBRIDEXPORT_PROFILES`` points at it)."""
    import shutil

    for p in (TESTS.parent / "profiles").glob("*.json"):
        shutil.copy(p, tmp_path / p.name)
    monkeypatch.setenv("HYBRIDEXPORT_PROFILES", str(tmp_path))
    return tmp_path


@pytest.fixture
def tiny_model():
    """A fresh ``TinyNet`` LoadedModel (classes=300: big enough for weight quantization)."""
    from models import tiny

    return tiny()


# ----------------------------------------------------------------------------- Hypothesis (tests/fuzz)

def _hypothesis_profiles() -> None:
    """``hybridexport-ci`` (the default): no deadline (a busy CI core is slow), a fresh random seed each run
    (printed in the header and, with the failing example's blob, on failure), no example database on disk.
    ``hybridexport-thorough`` runs 10× the examples (``--hypothesis-profile hybridexport-thorough``)."""
    import os

    from hypothesis import HealthCheck, settings

    common = dict(deadline=None, derandomize=False, print_blob=True, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    settings.register_profile("hybridexport-ci", max_examples=100, **common)
    settings.register_profile("hybridexport-thorough", max_examples=1000, **common)
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "hybridexport-ci"))


_hypothesis_profiles()
_FUZZ = {"seconds": 0.0, "tests": 0}


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """A fresh seed for the run unless ``--hypothesis-seed`` gave one, so the header can show it (before the
    Hypothesis plugin reads the option)."""
    import random

    if getattr(config.option, "hypothesis_seed", None) is None:
        config.option.hypothesis_seed = str(random.SystemRandom().randrange(2**32))


def pytest_report_header(config: pytest.Config) -> list[str]:
    from hypothesis import settings

    return [f"hypothesis: profile {settings.get_current_profile_name()}, max_examples {settings.default.max_examples}, "
            f"seed {config.option.hypothesis_seed} (repeat the run with --hypothesis-seed "
            f"{config.option.hypothesis_seed})"]


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" and "tests/fuzz/" in report.nodeid.replace("\\", "/"):
        _FUZZ["seconds"] += report.duration
        _FUZZ["tests"] += 1


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    import sys

    fuzzing = sys.modules.get("fuzzing")
    if _FUZZ["tests"] and fuzzing is not None:
        terminalreporter.write_line(f"fuzz: {fuzzing.CASES} cases in {_FUZZ['seconds']:.1f} s ({_FUZZ['tests']} tests, "
                                    f"hypothesis seed {terminalreporter.config.option.hypothesis_seed})")

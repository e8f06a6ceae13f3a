"""System tools only tests use (Chromium, epubcheck, poppler): skipped locally when
missing, a failure in CI, where .ci/run installs them."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# Files a person should look at (screenshots, rendered pages) land here.
ARTIFACTS = Path(__file__).resolve().parents[2] / "var" / "test-artifacts"


def require_tool(name: str, package: str) -> str:
    """The tool's path; skips the test without it, fails it in CI (CI=true)."""
    path = shutil.which(name)
    if path is None:
        reason = f"{name} is not installed (Debian package {package}; .ci/run installs it)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must run this test", pytrace=False)
        pytest.skip(reason)
    return path


def artifact(name: str) -> Path:
    """A path under var/test-artifacts/ for a file a person should look at."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / name

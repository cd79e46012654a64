"""The pinned Playwright matches the Chromium that ``make browser`` installs from Debian."""

from __future__ import annotations

import pytest

from tests.browser import chromium


def test_debian_chromium_is_installed():
    assert chromium.chromium_executable(), (
        "no `chromium` on PATH: run `make browser` (as root it installs Debian's chromium "
        "and fonts-dejavu-core with apt-get)"
    )


def test_playwright_is_built_for_debians_chromium_major():
    executable = chromium.chromium_executable()
    assert executable, "no `chromium` on PATH: run `make browser`"
    debian = chromium.debian_chromium_version(executable)
    playwright_version, bundled = chromium.playwright_bundled_chromium()
    problem = chromium.skew_problem(debian, playwright_version, bundled)
    assert problem is None, problem


@pytest.mark.parametrize(
    ("debian", "bundled", "fails"),
    [
        ("156.0.8078.129", "156.0.8078.4", False),
        ("156.0.8078.129", "155.0.7999.1", False),
        ("156.0.8078.129", "157.0.1.1", False),
        ("156.0.8078.129", "154.0.1.1", True),
        ("150.0.7871.100", "159.0.8154.6", True),
    ],
)
def test_skew_check_fails_from_two_majors_apart(debian, bundled, fails):
    problem = chromium.skew_problem(debian, "9.9.9", bundled)
    assert (problem is not None) is fails
    if fails:
        assert "playwright==9.9.9" in problem and "never run `playwright install`" in problem

"""Which Chromium the browser tests drive, and whether Playwright can drive it.

The tests use Debian's ``chromium`` (installed by ``make browser``), never a browser Playwright
downloads. Playwright talks to it over the Chrome DevTools Protocol with no version check of its
own ("Playwright only works with the bundled Chromium ... use at your own risk", the
``executable_path`` docstring in playwright/sync_api/_generated.py), so the pinned Playwright
must be the release whose bundled Chromium is closest to Debian's; :func:`skew_problem` says
when it no longer is.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

#: A skew of this many major versions or more fails the check.
MAX_MAJOR_SKEW = 2


def chromium_executable() -> str | None:
    return shutil.which("chromium")


def debian_chromium_version(executable: str) -> str:
    """``"156.0.8078.129"`` from ``chromium --version`` ("Chromium 156.0.8078.129 built on ...")."""
    out = subprocess.run(
        [executable, "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout
    match = re.search(r"(\d+)\.(\d+)\.(\d+)\.(\d+)", out)
    if not match:
        raise ValueError(f"no version in `{executable} --version`: {out!r}")
    return match.group(0)


def playwright_bundled_chromium() -> tuple[str, str]:
    """(Playwright version, the Chromium version its driver was built and tested against), from
    the wheel's ``playwright/driver/package/browsers.json``."""
    from importlib.metadata import version

    import playwright

    browsers = Path(playwright.__file__).parent / "driver" / "package" / "browsers.json"
    data = json.loads(browsers.read_text())
    for browser in data["browsers"]:
        if browser["name"] == "chromium":
            return version("playwright"), browser["browserVersion"]
    raise ValueError(f"no chromium entry in {browsers}")


def major(version: str) -> int:
    return int(version.split(".", 1)[0])


def skew_problem(debian: str, playwright_version: str, bundled: str) -> str | None:
    """A message saying what to do when the two Chromium majors are too far apart, else None."""
    skew = abs(major(debian) - major(bundled))
    if skew < MAX_MAJOR_SKEW:
        return None
    direction = "newer" if major(debian) > major(bundled) else "older"
    return (
        f"Debian's chromium {debian} is {skew} major versions {direction} than the Chromium "
        f"{bundled} that playwright=={playwright_version} is built for. Pin the playwright "
        f"release whose playwright/driver/package/browsers.json names a chromium "
        f"{major(debian)}.x in pyproject.toml's dev group (then `uv lock`); never run "
        f"`playwright install`."
    )

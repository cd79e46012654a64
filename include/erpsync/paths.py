"""Where erpsync keeps its files: the project folder and the git-ignored runtime folders inside it.

The project folder is found from ``ERPSYNC_PROJECT_DIR`` or, for an install from a checkout, from
the location of this package (``include/erpsync`` sits two levels below the project root).
"""

from __future__ import annotations

import os
from pathlib import Path


def project_dir() -> Path:
    """The erpsync project folder (holds pyproject.toml, dags/, airflow_settings.yaml)."""
    env = os.environ.get("ERPSYNC_PROJECT_DIR")
    if env:
        return Path(env).resolve()
    candidate = Path(__file__).resolve().parents[2]
    if (candidate / "pyproject.toml").exists() and (candidate / "dags").is_dir():
        return candidate
    return Path.cwd().resolve()


def state_dir() -> Path:
    """Git-ignored folder for local runtime state (embedded Postgres, secrets, sandbox data)."""
    return Path(os.environ.get("ERPSYNC_STATE_DIR", project_dir() / ".erpsync")).resolve()


def pgdata_dir() -> Path:
    return state_dir() / "pgdata"


def airflow_home() -> Path:
    """The project-local AIRFLOW_HOME (git-ignored) unless AIRFLOW_HOME is set."""
    return Path(os.environ.get("AIRFLOW_HOME", project_dir() / ".airflow")).resolve()


def dags_dir() -> Path:
    return project_dir() / "dags"


def plugins_dir() -> Path:
    return project_dir() / "plugins"


def settings_file() -> Path:
    return Path(os.environ.get("ERPSYNC_SETTINGS_FILE", project_dir() / "airflow_settings.yaml"))

"""prefect.yaml, read the way `storyloom setup` applies it.

Setup deploys straight from the checkout (no build, no push), so it accepts the subset
of prefect.yaml it can honour and refuses the rest rather than silently ignoring it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]
from pydantic import BaseModel, ConfigDict, Field

PROJECT_FILE = "prefect.yaml"
SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


class WorkPoolEntry(BaseModel):
    """A deployment's `work_pool:` (prefect.yaml cannot hold pool limits)."""

    model_config = ConfigDict(extra="forbid")

    name: str
    work_queue_name: str | None = None
    job_variables: dict[str, Any] = Field(default_factory=dict)


class DeploymentEntry(BaseModel):
    """One item of `deployments:`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$")
    # A file path relative to the project root and a function: "flows/story.py:story".
    entrypoint: str = Field(pattern=r"^[\w./-]+\.py:[A-Za-z_]\w*$")
    description: str | None = None
    work_pool: WorkPoolEntry
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    # None: inherit the file's `pull:`; [] means no pull steps at all (as in Prefect).
    pull: list[dict[str, Any]] | None = None

    @property
    def source(self) -> str:
        """The flow's file, relative to the project root."""
        return self.entrypoint.rsplit(":", 1)[0]

    @property
    def function(self) -> str:
        """The flow function's name in that file."""
        return self.entrypoint.rsplit(":", 1)[1]


class ProjectFile(BaseModel):
    """The whole of prefect.yaml."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = None
    prefect_version: str | None = Field(None, alias="prefect-version")
    # Setup runs no build or push steps: the code is where the workers run it.
    build: None = None
    push: None = None
    pull: list[dict[str, Any]] | None = None
    deployments: list[DeploymentEntry] = Field(default_factory=list)


class ProjectFileError(ValueError):
    """prefect.yaml asks for something setup cannot do."""


def project_root() -> Path:
    """The folder holding prefect.yaml: this checkout, else the working directory."""
    checkout = Path(__file__).resolve().parents[1]
    for candidate in (checkout, Path.cwd()):
        if (candidate / PROJECT_FILE).is_file():
            return candidate
    raise FileNotFoundError(f"no {PROJECT_FILE} in {checkout} or {Path.cwd()}")


def read_project(root: Path) -> ProjectFile:
    """Parse and check root/prefect.yaml."""
    raw = yaml.safe_load((root / PROJECT_FILE).read_text(encoding="utf-8")) or {}
    if _has_template(raw):
        # `prefect deploy` resolves {{ ... }} from variables, blocks and step outputs;
        # setup does not, and a literal "{{ $X }}" deployed by mistake fails at run time.
        raise ProjectFileError(f"{PROJECT_FILE}: {{{{ ... }}}} templates are not supported")
    try:
        return ProjectFile.model_validate(raw)
    except ValueError as exc:
        raise ProjectFileError(f"{PROJECT_FILE}: {exc}") from exc


def pull_steps(project: ProjectFile, entry: DeploymentEntry, root: Path) -> list[dict[str, Any]]:
    """The pull steps a worker runs before loading the flow.

    As in `prefect deploy`: the deployment's own `pull:`, else the file's, else a
    set_working_directory to the project root, so a worker anywhere on this machine
    imports the code from the checkout.
    """
    if entry.pull is not None:
        return entry.pull
    if project.pull is not None:
        return project.pull
    return [{SET_WORKING_DIRECTORY: {"directory": str(root)}}]


def _has_template(value: object) -> bool:
    if isinstance(value, str):
        return "{{" in value
    if isinstance(value, dict):
        return any(_has_template(k) or _has_template(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_template(v) for v in value)
    return False

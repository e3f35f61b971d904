"""Where the workspace and the database are: ``HALA_HOME`` and ``HALA_DB_URL``."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


def _shared_data_default() -> list[Path]:
    here = Path(__file__).resolve().parent.parent
    candidates = [here.parent / "shared" / "data", Path.cwd().parent / "shared" / "data"]
    return [p.resolve() for p in candidates if p.is_dir()]  # resolved: a symlinked data folder still matches


@dataclass(frozen=True)
class Settings:
    home: Path
    db_url: str
    read_roots: tuple[Path, ...] = field(default_factory=tuple)

    @property
    def models_dir(self) -> Path:
        return self.home / "models"

    @property
    def datasets_dir(self) -> Path:
        return self.home / "datasets"

    @property
    def reports_dir(self) -> Path:
        return self.home / "reports"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    def job_dir(self, job_id: int) -> Path:
        return self.jobs_dir / str(job_id)

    @property
    def data_dir(self) -> Path | None:
        """The sample data folder (``../shared/data``) when it is present."""
        for root in self.read_roots:
            if (root / "alpaca_5000").is_dir() or (root / "exams_ar").is_dir():
                return root
        return None

    def ensure(self) -> Settings:
        for d in (self.home, self.models_dir, self.datasets_dir, self.reports_dir, self.jobs_dir):
            d.mkdir(parents=True, exist_ok=True)
        return self


def load_settings(home: str | Path | None = None, db_url: str | None = None) -> Settings:
    """Read the settings from arguments, then the environment, then defaults (``./hala_home``)."""
    home_path = Path(home or os.environ.get("HALA_HOME") or "hala_home").expanduser().resolve()
    url = db_url or os.environ.get("HALA_DB_URL") or f"sqlite:///{home_path / 'hala.db'}"
    extra = [Path(p).expanduser().resolve() for p in os.environ.get("HALA_READ_ROOTS", "").split(os.pathsep) if p]
    roots = tuple(dict.fromkeys([home_path, *extra, *_shared_data_default()]))
    return Settings(home=home_path, db_url=url, read_roots=roots)


def resolve_inside(path: str | Path, roots: tuple[Path, ...] | list[Path]) -> Path:
    """Resolve a user-supplied path and refuse it unless it lies inside one of ``roots``."""
    p = Path(path).expanduser().resolve()
    for root in (r.resolve() for r in roots):
        if p == root or p.is_relative_to(root):
            return p
    allowed = ", ".join(str(r) for r in roots)
    raise ValueError(f"path {str(path)!r} is outside the allowed folders ({allowed}); "
                     "put it under HALA_HOME or add its folder to HALA_READ_ROOTS")

"""Which local directories a project's ``Local`` tasks may use, and what is never reachable.

``fs_project_roots`` grants directories per project id (``"*"`` grants to every project).
``fs_roots`` is the older, shared form: its directories are granted to every project too, and
the server warns about it at start. Whatever the grants say, omsync's own data directory, its
database file and its master key are *protected*: a bucket inside one of them, or containing
one of them, is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

from omsync.config import Settings

ALL_PROJECTS = "*"


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def granted_roots(settings: Settings, project_id: str) -> list[Path]:
    """The real paths of the roots ``project_id`` may use (its own grants, ``*`` grants and the
    shared ``fs_roots``)."""
    found: list[Path] = [*settings.fs_roots, *settings.fs_project_roots.get(ALL_PROJECTS, [])]
    if project_id != ALL_PROJECTS:
        found += settings.fs_project_roots.get(project_id, [])
    return list(dict.fromkeys(_real(p) for p in found))


def usable_roots(settings: Settings) -> list[Path]:
    """Every root any project may use (the bound of a store shared by all tasks)."""
    found: list[Path] = list(settings.fs_roots)
    for roots in settings.fs_project_roots.values():
        found += roots
    return list(dict.fromkeys(_real(p) for p in found))


def protected_paths(settings: Settings) -> list[Path]:
    """Paths no task may ever reach: the data directory, the SQLite database, the master key."""
    found = [_real(settings.data_dir), _real(settings.data_dir / "master.key")]
    url = settings.resolved_database_url
    if url.startswith("sqlite") and ":///" in url:
        database = url.split(":///", 1)[1].split("?", 1)[0]
        if database and database != ":memory:":
            found.append(_real(Path(database)).parent)
    return list(dict.fromkeys(found))


def _inside(path: Path, parent: Path) -> bool:
    return path == parent or parent in path.parents


def local_bucket_problem(settings: Settings, project_id: str, bucket: str) -> str | None:
    """Why ``bucket`` cannot be a ``Local`` bucket of ``project_id``, or None when it can.

    The bucket must be an absolute path whose real path (symbolic links resolved) lies inside
    a root granted to the project and neither inside nor above a protected path.
    """
    if not bucket or "\x00" in bucket or not os.path.isabs(bucket):
        return "must be an absolute directory path"
    roots = granted_roots(settings, project_id)
    if not roots:
        return "no local directory is granted to this project (OMSYNC_FS_PROJECT_ROOTS)"
    real = _real(Path(bucket))
    if not any(_inside(real, root) for root in roots):
        return "must be a directory inside a root granted to this project (OMSYNC_FS_PROJECT_ROOTS)"
    for protected in protected_paths(settings):
        if _inside(real, protected) or _inside(protected, real):
            return "must not contain or lie inside omsync's data directory"
    return None


__all__ = ["ALL_PROJECTS", "granted_roots", "local_bucket_problem", "protected_paths", "usable_roots"]

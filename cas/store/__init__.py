"""The embedded default store: a repository directory on local disk.

``LocalStore`` owns the directory (lock, layout, metadata, pins, verify);
``FileBlockStore`` holds the block bytes. See ``_local.py`` for the
invariants kept across crashes.
"""

from ._blockfiles import FileBlockStore
from ._local import LocalStore, Problem, RepoStat, VerifyReport

__all__ = ["FileBlockStore", "LocalStore", "Problem", "RepoStat", "VerifyReport"]

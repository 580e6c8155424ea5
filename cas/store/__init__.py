"""The embedded default store: a repository directory on local disk.

``LocalStore`` owns the directory (lock, layout, pins, namespace roots,
verify, gc); ``RepositoryBlockStore`` holds block bytes, large ones in files
(``FileBlockStore``) and small ones in SQLite (``Database``). See
``_local.py`` for the invariants kept across crashes.
"""

from ._blockfiles import FileBlockStore
from ._blockstore import SMALL_BLOCK_LIMIT, RepositoryBlockStore, WriteSession
from ._held import DEFAULT_QUOTA, HeldBlocks, StorageQuotaError
from ._local import GcReport, LocalStore, NamespaceKey, Problem, RepoStat, RootRow, VerifyReport

__all__ = [
    "DEFAULT_QUOTA",
    "SMALL_BLOCK_LIMIT",
    "HeldBlocks",
    "StorageQuotaError",
    "FileBlockStore",
    "GcReport",
    "LocalStore",
    "NamespaceKey",
    "Problem",
    "RepoStat",
    "RepositoryBlockStore",
    "RootRow",
    "VerifyReport",
    "WriteSession",
]

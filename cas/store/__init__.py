"""The embedded default store: a repository directory on local disk.

``LocalStore`` owns the directory (lock, layout, pins, namespace roots,
verify, gc); ``RepositoryBlockStore`` holds block bytes, large ones in
append-only pack files (``PackStore``) and small ones in SQLite
(``Database``). See ``_local.py`` and ``_packs.py`` for the invariants kept
across crashes.
"""

from ._blockstore import SMALL_BLOCK_LIMIT, RepositoryBlockStore, WriteSession
from ._packs import BlockLocation, CompactReport, PackStore
from ._held import DEFAULT_QUOTA, HeldBlocks, StorageQuotaError
from ._local import GcReport, LocalStore, NamespaceKey, Problem, RepoStat, RootRow, VerifyReport

__all__ = [
    "DEFAULT_QUOTA",
    "BlockLocation",
    "CompactReport",
    "PackStore",
    "SMALL_BLOCK_LIMIT",
    "HeldBlocks",
    "StorageQuotaError",
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

"""The embedded default store: a repository directory on local disk.

``LocalStore`` owns the directory (lock, layout, pins, namespace roots,
verify, gc); ``RepositoryBlockStore`` holds block bytes, large ones in
append-only pack files (``PackStore``) and small ones in SQLite
(``Database``). See ``_local.py`` and ``_packs.py`` for the invariants kept
across crashes.
"""

from typing import TYPE_CHECKING, Any

from ..errors import StorageQuotaError
from ._blockstore import SMALL_BLOCK_LIMIT, RepositoryBlockStore, WriteSession
from ._held import DEFAULT_LEASE, DEFAULT_QUOTA, HeldBlocks, OwnBlocks, Placed
from ._local import LocalStore, RepoStat, RootRow
from ._lock import NOTICE_AFTER as LOCK_NOTICE_AFTER
from ._lock import locked_error
from ._packs import BlockLocation, PackStore

if TYPE_CHECKING:
    from ..keys import NamespaceKey
    from ._reports import CompactReport, GcReport, Problem, VerifyReport

# Loaded when first named: the maintenance reports and the namespace key
# are not needed to read a file (see "Records" in docs/architecture.md).
_LAZY = {
    "CompactReport": "._reports",
    "GcReport": "._reports",
    "Problem": "._reports",
    "VerifyReport": "._reports",
    "NamespaceKey": "..keys",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value

__all__ = [
    "DEFAULT_LEASE",
    "DEFAULT_QUOTA",
    "Placed",
    "BlockLocation",
    "CompactReport",
    "PackStore",
    "SMALL_BLOCK_LIMIT",
    "HeldBlocks",
    "OwnBlocks",
    "StorageQuotaError",
    "GcReport",
    "LocalStore",
    "LOCK_NOTICE_AFTER",
    "NamespaceKey",
    "Problem",
    "RepoStat",
    "RepositoryBlockStore",
    "RootRow",
    "VerifyReport",
    "WriteSession",
    "locked_error",
]

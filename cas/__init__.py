"""cas: a content-addressed storage network you mount as a directory.

The library in one screen::

    import cas

    with cas.open_repository() as repo:          # $CAS_HOME or the user data dir
        cid = repo.add_path("photo.jpg").cid      # store a file (pinned)
        data = repo.read(cid, offset=0, length=100)
        with repo.open(cid) as f:                 # seekable file object
            f.seek(-10, 2)
            tail = f.read()

Everything cas raises for a user to see derives from :class:`CasError`.
"""

import typing as _typing

from .cid import CID, DAG_CBOR, DAG_PB, RAW, parse_cid
from .errors import (
    BlockNotFoundError,
    CasError,
    InvalidBlockError,
    InvalidCIDError,
    InvalidInputError,
    NotAFileError,
    RepositoryError,
    RepositoryLockedError,
)

if _typing.TYPE_CHECKING:
    from .aio import AsyncRepository
    from .api import Added, NodeInfo, Repository, default_repository_path, open_repository
    from .blocks import Block, BlockStore

_LAZY = {
    "Added": "api", "AsyncRepository": "aio", "NodeInfo": "api", "Repository": "api",
    "default_repository_path": "api", "open_repository": "api", "Block": "blocks", "BlockStore": "blocks",
}
"""Names imported on first use: ``import cas.store`` (every ``cas`` command
does the like) then does not load the whole library, which costs a short
command most of its start-up."""


def __getattr__(name: str) -> object:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'cas' has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


__version__ = "0.1.0"

__all__ = [
    "Added",
    "AsyncRepository",
    "Block",
    "BlockNotFoundError",
    "BlockStore",
    "CID",
    "CasError",
    "DAG_CBOR",
    "DAG_PB",
    "InvalidBlockError",
    "InvalidCIDError",
    "InvalidInputError",
    "NodeInfo",
    "NotAFileError",
    "RAW",
    "Repository",
    "RepositoryError",
    "RepositoryLockedError",
    "default_repository_path",
    "open_repository",
    "parse_cid",
]

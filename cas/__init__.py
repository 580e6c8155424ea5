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

from .api import Added, AsyncRepository, NodeInfo, Repository, default_repository_path, open_repository
from .blocks import Block, BlockStore
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

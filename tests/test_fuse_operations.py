"""fuse/operations.py's error mapping: what errno a handler's failure
becomes (the mount's handlers each run inside ``fuse_errors``)."""

from __future__ import annotations

import errno
import logging

import pytest
from cas.fuse.operations import fuse_errors
from cas.fuse.wire import FUSEError

from cas.errors import InvalidInputError, PathNotFoundError, RepositoryError


def errno_of(exc: BaseException) -> int:
    with pytest.raises(FUSEError) as raised:
        with fuse_errors("test"):
            raise exc
    assert raised.value.__suppress_context__, "the user sees the errno, not a chain"
    return raised.value.errno


def test_each_failure_becomes_the_errno_a_file_system_returns(caplog: pytest.LogCaptureFixture) -> None:
    assert errno_of(PathNotFoundError("/a: no such file or directory")) == errno.ENOENT
    assert errno_of(InvalidInputError("bad name")) == errno.EINVAL
    assert errno_of(OSError(errno.ENOSPC, "full")) == errno.ENOSPC
    assert errno_of(OSError("no errno")) == errno.EIO
    with caplog.at_level(logging.ERROR, logger="cas.fuse"):
        assert errno_of(RepositoryError("the database failed")) == errno.EIO
        assert errno_of(RuntimeError("a bug")) == errno.EIO
    assert "test: the database failed" in caplog.text
    assert "test failed" in caplog.text and "RuntimeError: a bug" in caplog.text  # with its traceback


def test_an_answer_or_a_cancellation_goes_through_as_it_is() -> None:
    with pytest.raises(FUSEError) as raised:
        with fuse_errors("test"):
            raise FUSEError(errno.EEXIST)
    assert raised.value.errno == errno.EEXIST
    with pytest.raises(KeyboardInterrupt):
        with fuse_errors("test"):
            raise KeyboardInterrupt
    with fuse_errors("test"):
        pass  # nothing raised: nothing to map

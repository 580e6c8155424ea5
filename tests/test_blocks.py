from __future__ import annotations

import pytest

from cas.blocks import MAX_BLOCK_SIZE, Block, verified
from cas.cid import CID, RAW
from cas.errors import InvalidBlockError


def test_a_block_is_its_bytes_and_their_cid():
    block = Block.of(RAW, b"hello")
    assert block.cid == CID.for_data(RAW, b"hello") and block.data == b"hello"
    assert Block(block.cid, b"hello") == block
    assert "hello" not in repr(block) and "5 bytes" in repr(block)


def test_a_block_whose_bytes_do_not_match_its_cid_cannot_be_made():
    cid = CID.for_data(RAW, b"hello")
    with pytest.raises(InvalidBlockError, match="does not match its hash"):
        Block(cid, b"hellO")
    with pytest.raises(InvalidBlockError, match="does not match its hash"):
        Block.of(RAW, b"hello")._replace(data=b"other")
    with pytest.raises(InvalidBlockError, match="does not match its hash"):
        Block.of(RAW, b"hello")._replace(cid=CID.for_data(RAW, b"other"))


def test_blocks_over_the_limit_are_refused_before_they_are_hashed():
    big = bytes(MAX_BLOCK_SIZE + 1)
    with pytest.raises(InvalidBlockError, match="limit"):
        Block.of(RAW, big)
    with pytest.raises(InvalidBlockError, match="limit"):
        Block(CID.for_data(RAW, big), big)


def test_verified_returns_the_bytes_or_names_the_cid():
    cid = CID.for_data(RAW, b"abc")
    assert verified(cid, b"abc") == b"abc"
    with pytest.raises(InvalidBlockError, match=str(cid)):
        verified(cid, b"abd")

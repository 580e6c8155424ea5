"""Node identity: key generation, the 0600 key file, node IDs."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import blake3
import pytest

from cas.errors import CasError
from cas.net.identity import Identity, IdentityError, node_id_for, verify_signature


def test_node_id_is_blake3_of_the_ed25519_public_key() -> None:
    identity = Identity.from_seed(bytes(range(32)))
    assert len(identity.public_key) == 32
    assert identity.node_id == blake3.blake3(identity.public_key).digest()
    assert node_id_for(identity.public_key) == identity.node_id


def test_save_writes_mode_0600_and_load_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    identity = Identity.generate()
    identity.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Identity.load(path).public_key == identity.public_key
    assert [p.name for p in tmp_path.iterdir()] == ["identity.key"]  # no temp file left


def test_save_replaces_an_existing_key_atomically(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    Identity.generate().save(path)
    second = Identity.generate()
    second.save(path)
    assert Identity.load(path).node_id == second.node_id


def test_load_or_create_creates_once_then_reuses(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    first = Identity.load_or_create(path)
    assert Identity.load_or_create(path).node_id == first.node_id


def test_load_refuses_a_key_readable_by_others(tmp_path: Path) -> None:
    path = tmp_path / "identity.key"
    Identity.generate().save(path)
    os.chmod(path, 0o644)
    with pytest.raises(IdentityError, match="chmod 600"):
        Identity.load(path)


@pytest.mark.parametrize(
    "content",
    [b"", b"garbage\n", b"cas-ed25519-seed-v1 abcd\n", b"cas-ed25519-seed-v1 " + b"zz" * 32,
     b"cas-ed25519-seed-v2 " + b"00" * 32, b"\xff" * 40, b"cas-ed25519-seed-v1 " + b"0" * 400],
)
def test_load_refuses_a_damaged_key_file_with_a_clear_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "identity.key"
    path.write_bytes(content)
    os.chmod(path, 0o600)
    with pytest.raises(IdentityError, match="damaged or not a cas key"):
        Identity.load(path)


def test_load_refuses_missing_files_directories_and_symlinks(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="does not exist"):
        Identity.load(tmp_path / "absent")
    with pytest.raises(IdentityError):
        Identity.load(tmp_path)
    real = tmp_path / "real.key"
    Identity.generate().save(real)
    (tmp_path / "link.key").symlink_to(real)
    with pytest.raises(IdentityError):
        Identity.load(tmp_path / "link.key")
    assert issubclass(IdentityError, CasError)


def test_save_into_a_missing_directory_is_an_identity_error(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="cannot write"):
        Identity.generate().save(tmp_path / "no" / "such" / "identity.key")


def test_signatures_verify_only_for_the_signer_and_message() -> None:
    alice, bob = Identity.generate(), Identity.generate()
    sig = alice.sign(b"message")
    assert verify_signature(alice.public_key, b"message", sig)
    assert not verify_signature(bob.public_key, b"message", sig)
    assert not verify_signature(alice.public_key, b"other", sig)
    assert not verify_signature(alice.public_key, b"message", sig[:10])


def test_repr_never_shows_the_secret() -> None:
    identity = Identity.from_seed(b"\x42" * 32)
    assert "42424242" not in repr(identity)


def test_an_identity_made_with_work_shows_it_and_a_random_one_rarely_does(tmp_path) -> None:
    from cas.net.identity import Identity, id_work, meets_difficulty

    worked = Identity.with_work(10)
    assert id_work(worked.node_id) >= 10 and meets_difficulty(worked.node_id, 10)
    assert meets_difficulty(Identity.generate().node_id, 0)  # no work asked, none needed
    shown = [id_work(Identity.generate().node_id) for _ in range(400)]
    assert sum(w >= 4 for w in shown) < 80  # about 1 in 16 by chance


def test_a_node_key_short_of_the_work_asked_is_replaced_and_kept_aside(tmp_path) -> None:
    from cas.net.identity import Identity, id_work

    path = tmp_path / "node.key"
    weak = Identity.generate()
    while id_work(weak.node_id) >= 8:
        weak = Identity.generate()
    weak.save(path)
    kept, replaced = Identity.for_node(path, 0)
    assert kept.node_id == weak.node_id and not replaced
    strong, replaced = Identity.for_node(path, 8)
    assert replaced and id_work(strong.node_id) >= 8
    assert Identity.load(tmp_path / "node.key.old").node_id == weak.node_id
    assert Identity.for_node(path, 8) == (strong, False)

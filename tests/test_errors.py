"""The one hierarchy of cas's exceptions (cas/errors.py)."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import pytest

import cas
from cas import errors
from cas.errors import CasError, LocalProtocolError, PeerError, RemoteProtocolError


def every_module() -> list[str]:
    names = []
    for info in pkgutil.walk_packages(cas.__path__, "cas."):
        if info.name.startswith(("cas.fuse", "cas.cli")):
            continue  # walked below: they live in their own directories (package-dir)
        names.append(info.name)
    for package in ("cas.fuse", "cas.cli"):
        module = importlib.import_module(package)
        names += [info.name for info in pkgutil.walk_packages(module.__path__, f"{package}.")]
    return names


def test_every_exception_cas_raises_is_declared_in_cas_errors() -> None:
    elsewhere = []
    for name in every_module():
        if name == "cas.errors":
            continue
        module = importlib.import_module(name)
        for attr, value in vars(module).items():
            if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == name:
                if not attr.startswith("_"):  # a module's private one, never raised past it
                    elsewhere.append(f"{name}.{attr}")
    assert elsewhere == []


def test_class_names_are_unique_as_the_control_socket_sends_them_by_name() -> None:
    names = [cls.__name__ for cls in all_errors()]
    assert len(names) == len(set(names))


def all_errors() -> list[type[CasError]]:
    return [value for value in vars(errors).values()
            if inspect.isclass(value) and issubclass(value, CasError)]


@pytest.mark.parametrize("name", ["ConnectionClosedError", "RequestTimeoutError", "RequestFailedError",
                                  "PeerUnreachableError", "PeerRefusedError", "BootstrapError",
                                  "MalformedMessageError", "FrameTooLargeError", "HandshakeTimeoutError",
                                  "NetworkMismatchError", "PeerIdMismatchError", "DecryptError"])
def test_what_a_peer_does_or_fails_to_do_is_a_peer_error(name: str) -> None:
    assert issubclass(getattr(errors, name), PeerError)


def test_the_peers_faults_are_apart_from_ours() -> None:
    local = [cls for cls in all_errors() if not issubclass(cls, PeerError)]
    assert errors.StorageQuotaError in local and errors.RepositoryError in local
    assert errors.ControlProtocolError in local  # the daemon is this machine's, not a peer
    assert issubclass(RemoteProtocolError, PeerError)
    assert not issubclass(LocalProtocolError, CasError)  # our bug: never handled as a user's error


def test_every_error_crosses_the_control_socket_as_itself() -> None:
    from cas.control import error_from_value, error_value

    for cls in all_errors():
        exc = cls.__new__(cls)
        Exception.__init__(exc, f"a {cls.__name__}")
        again = error_from_value(error_value(exc))
        assert type(again) is cls and str(again) == f"a {cls.__name__}"

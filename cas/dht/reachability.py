"""Whether other nodes can dial this one (AutoNAT's check), sans-IO.

Theory of operation
===================

Most machines sit behind a NAT or a firewall: they can dial out, nobody can
dial in. Such a node, filed by its peers under its connection's address and
the port it listens on, would be handed out as a contact that every dial
fails against, and chosen to hold blocks it can never be asked for. It
cannot tell from inside; others can. So a node asks a few peers it is
connected to to *dial it back*: each opens a new connection to the address
the request came from, at the port the node says it listens on, and
completes a handshake, which proves that the node itself answered there
(and not, say, another machine behind the same router). The answer is one
boolean (``dial_back_result``).

The verdict (:func:`verdict`): reachable as soon as one peer reached it;
unreachable when at least :data:`REFUTE` peers answered and none reached
it; unknown otherwise (too few answers: alone, or its peers are old nodes
or busy). A node that is unreachable becomes a DHT client: its hellos name
no port from then on, so no peer files it as a contact.

Abuse: a peer dials back only the address the request came from (never
one the request names), once a minute per requester after a small burst
(``responder.DIAL_BACK_RATE``), so the check cannot aim connections at a
third party.

What may live in this file: the verdict and its constants. Not here: the
requests and the dials (``DhtDriver.check_reachable``, ``dial_back``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ASK = 4
"""Peers asked per check (all at once)."""
REFUTE = 2
"""Answers, none of them a success, that make a node unreachable: one
failure might be that peer's own outbound trouble."""


@dataclass(frozen=True)
class Reachability:
    """One check's outcome: ``reachable`` is None when it could not tell."""

    reachable: bool | None
    asked: int
    reached: int
    failed: int


def verdict(answers: Sequence[bool]) -> bool | None:
    """True if any peer reached us; False if at least REFUTE answered and
    none did; None if too few answered to say."""
    if any(answers):
        return True
    if len(answers) >= REFUTE:
        return False
    return None

"""How the router passes on a node's refusal (pure: no servers)."""

from __future__ import annotations

import grpc

from mint.domain.errors import PermissionDenied, Unavailable
from services.router.servicer import _from_node


class Refusal(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_a_node_refusing_the_routers_credentials_is_not_the_callers_fault() -> None:
    error = _from_node(Refusal(grpc.StatusCode.UNAUTHENTICATED, "unknown or revoked token"))
    assert isinstance(error, Unavailable)
    assert "router's credentials" in str(error)


def test_other_refusals_pass_through_with_their_status() -> None:
    error = _from_node(Refusal(grpc.StatusCode.PERMISSION_DENIED, "tenant other"))
    assert isinstance(error, PermissionDenied)
    assert str(error) == "tenant other"

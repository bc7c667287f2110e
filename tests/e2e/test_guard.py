"""The autouse guard: no test can reach a host that is not loopback (no paid model by accident)."""

from __future__ import annotations

import socket

import httpx
import pytest


def test_a_non_loopback_connection_is_refused_before_any_packet_leaves():
    with socket.socket() as s, pytest.raises(ConnectionRefusedError, match="only connect to loopback"):
        s.connect(("192.0.2.1", 443))  # TEST-NET-1: never routed; refused by the guard itself


def test_httpx_to_a_provider_address_is_refused():
    with pytest.raises(httpx.ConnectError, match="loopback"):
        httpx.get("http://192.0.2.1:80/v1/models", timeout=1)


def test_loopback_is_allowed(peer):
    assert httpx.get(peer.url + "/api/version", timeout=5).status_code == 200

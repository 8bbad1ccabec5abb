"""What the services relkit runs (the annotation app, the ranking service) ask of the network."""
from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    """Whether an address to bind keeps a service on this machine (beyond it, relkit asks for a
    token or an API key).

    >>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("::1")
    (True, True, True)
    >>> is_loopback("0.0.0.0"), is_loopback("192.168.1.20"), is_loopback("example.com")
    (False, False, False)
    """
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

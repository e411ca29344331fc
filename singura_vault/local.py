"""What is local to this machine: loopback hosts, and the files the vault keeps in its
data directory.

A kernel module (standard library only) so that every layer that needs one of these
names imports it from here, the sealed key package included: the settings, the egress
checks, the transit key provider and backup each used to keep a copy, and a drifted
copy of "is this host loopback?" decides whether a token may cross a network in the
clear. It must never import another module of the vault.
"""

from __future__ import annotations

import ipaddress

__all__ = [
    "DEVELOPMENT_AUTH_SECRET_FILE",
    "DEVELOPMENT_KEYRING_FILE",
    "DEVELOPMENT_SIGNING_KEY_FILE",
    "is_loopback",
]

# The embedded development mode's generated secrets, in the data directory (written by
# keys/loading.py, service/access.py and keys/signing.py; checked by backup.py).
DEVELOPMENT_KEYRING_FILE = "keyring.json"
DEVELOPMENT_AUTH_SECRET_FILE = "auth-secret"  # noqa: S105 - a file name
DEVELOPMENT_SIGNING_KEY_FILE = "audit-signing-key"


def is_loopback(host: str) -> bool:
    """True for localhost (any case) and loopback IP literals."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False

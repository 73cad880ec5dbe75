"""A guard that refuses every outbound network connection except to this machine (loopback).

The course must run offline, so notebook kernels under test run with this guard on
(``COURSE_BLOCK_NETWORK=1`` and ``scripts/netblock`` on ``PYTHONPATH``, see ``scripts/netblock/sitecustomize.py``).
A connection to another host, or a name lookup that would ask a DNS server, raises
:class:`NetworkBlockedError` naming the host *before* the real socket call runs, so no packet leaves.
Host names other than ``localhost`` and this machine's own name (``socket.gethostname()``, which
``torch.distributed`` looks up to label its processes) are refused without being resolved, even where
``/etc/hosts`` maps them to this machine; numeric loopback addresses (``127.0.0.0/8``, ``::1``) always work.
"""
from __future__ import annotations

import ipaddress
import socket
import sys

ENV_VARIABLE = "COURSE_BLOCK_NETWORK"
LOCAL_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})

_OWN_NAME = socket.gethostname().strip().lower().rstrip(".")  # this machine: no DNS server is asked about it
_ORIGINALS: dict[tuple[object, str], object] = {}  # (owner, name) -> what owner.__dict__ held (None: inherited)
blocked_attempts: list[str] = []  # every refused host, in order (for tests and post-mortems)


class NetworkBlockedError(RuntimeError):
    """A connection to a non-loopback host was attempted while the course's network guard is on."""


def _is_local_host(host) -> bool:
    """True for loopback / unspecified addresses and local names; False for anything that leaves the machine."""
    if host is None:
        return True
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    host = str(host).strip().lower().rstrip(".")
    if host in ("", *LOCAL_NAMES) or host == _OWN_NAME:
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])  # "fe80::1%eth0" carries a zone index
    except ValueError:
        return False  # a host name other than localhost: resolving it would ask a DNS server
    mapped = getattr(address, "ipv4_mapped", None)
    address = mapped or address
    return address.is_loopback or address.is_unspecified


def _refuse(host, action: str):
    blocked_attempts.append(str(host))
    message = (f"Network access is blocked in course notebooks: {action} {host!s} was refused before any "
               f"packet was sent. The course runs offline; load models and data through course_lib "
               f"(unset {ENV_VARIABLE} to allow the network).")
    print(f"[network guard] {message}", file=sys.stderr, flush=True)  # loud even if a library swallows the error
    raise NetworkBlockedError(message)


def _check_address(sock, address, action: str) -> None:
    if sock.family not in (socket.AF_INET, socket.AF_INET6):
        return  # Unix sockets and netlink never leave the machine
    host = address[0] if isinstance(address, tuple) and address else address
    if not _is_local_host(host):
        port = address[1] if isinstance(address, tuple) and len(address) > 1 else "?"
        _refuse(f"{host}:{port}", action)


def _address_argument(name: str, args: tuple, kwargs: dict):
    """The destination of a socket call, or None when it has none (``sendto`` and ``sendmsg`` vary)."""
    if "address" in kwargs:
        return kwargs["address"]
    if name in ("connect", "connect_ex"):
        return args[0] if args else None
    if name == "sendto":  # sendto(data, address) or sendto(data, flags, address)
        return args[-1] if len(args) >= 2 else None
    if name == "sendmsg":  # sendmsg(buffers, ancdata, flags, address)
        return args[3] if len(args) >= 4 else None
    return None


def _guard_socket_method(name: str):
    original = getattr(socket.socket, name)

    def guarded(self, *args, **kwargs):
        address = _address_argument(name, args, kwargs)
        if address is not None:
            _check_address(self, address, f"socket.{name} to")
        return original(self, *args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    guarded.__doc__ = original.__doc__
    _ORIGINALS[(socket.socket, name)] = socket.socket.__dict__.get(name)
    setattr(socket.socket, name, guarded)


def _guard_lookup(name: str):
    original = getattr(socket, name)

    def guarded(host, *args, **kwargs):
        if not _is_local_host(host):
            _refuse(host, "looking up the host name")
        return original(host, *args, **kwargs)

    guarded.__name__ = guarded.__qualname__ = name
    guarded.__doc__ = original.__doc__
    _ORIGINALS[(socket, name)] = original
    setattr(socket, name, guarded)


def is_installed() -> bool:
    return bool(_ORIGINALS)


def install() -> None:
    """Turn the guard on in this process (idempotent)."""
    if is_installed():
        return
    for name in ("connect", "connect_ex", "sendto", "sendmsg"):
        _guard_socket_method(name)
    for name in ("getaddrinfo", "gethostbyname", "gethostbyname_ex", "gethostbyaddr"):
        _guard_lookup(name)


def uninstall() -> None:
    """Restore the original socket functions."""
    for (owner, name), original in _ORIGINALS.items():
        if original is None:
            delattr(owner, name)  # the method was inherited from _socket.socket
        else:
            setattr(owner, name, original)
    _ORIGINALS.clear()


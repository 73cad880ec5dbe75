"""The network guard of notebook runs: other hosts are refused before any packet leaves; loopback works.

No test sends traffic: every outbound attempt targets 192.0.2.1 (TEST-NET-1, reserved for documentation)
and is made only after the test has confirmed that the guard is installed.
"""
from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
import threading

import netblock_guard as netblock
import pytest
from kernel_env import kernel_environment

TEST_NET = "192.0.2.1"


def _guard_is_active() -> bool:
    return "netblock" in getattr(socket.socket.connect, "__module__", "")


@pytest.fixture
def guard():
    netblock.install()
    assert _guard_is_active(), "the guard did not install itself"
    try:
        yield netblock
    finally:
        netblock.uninstall()


def _loopback_round_trip(host: str) -> bytes:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.create_server((host, 0), family=family) as server:
        threading.Thread(target=lambda: server.accept()[0].sendall(b"pong"), daemon=True).start()
        with socket.create_connection(server.getsockname()[:2], timeout=5) as client:
            return client.recv(4)


def test_guard_refuses_a_test_net_connection_before_the_socket_is_used(guard):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setblocking(False)  # a real connect would return at once with EINPROGRESS, not our error
        with pytest.raises(netblock.NetworkBlockedError, match=rf"{TEST_NET}:80"):
            sock.connect((TEST_NET, 80))
        # A connection attempt binds the socket to a local port; ours is still unbound, so nothing was sent.
        assert sock.getsockname() == ("0.0.0.0", 0)
        with pytest.raises(netblock.NetworkBlockedError):
            sock.connect_ex((TEST_NET, 443))


def test_guard_refuses_name_lookups_and_datagrams_to_other_hosts(guard):
    with pytest.raises(netblock.NetworkBlockedError, match="huggingface.co"):
        socket.getaddrinfo("huggingface.co", 443)
    with pytest.raises(netblock.NetworkBlockedError, match="pypi.org"):
        socket.gethostbyname("pypi.org")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        with pytest.raises(netblock.NetworkBlockedError, match=f"{TEST_NET}:53"):
            udp.sendto(b"x", (TEST_NET, 53))
        with pytest.raises(netblock.NetworkBlockedError, match=f"{TEST_NET}:53"):
            udp.sendto(b"x", 0, (TEST_NET, 53))
        assert udp.getsockname() == ("0.0.0.0", 0)
    assert netblock.blocked_attempts[-1] == f"{TEST_NET}:53"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_guard_lets_loopback_connections_through(guard, host):
    assert _loopback_round_trip(host) == b"pong"


def test_loopback_and_unspecified_addresses_count_as_local_and_others_do_not():
    local = ["127.0.0.1", "127.5.5.5", "::1", "localhost", "LOCALHOST.", "0.0.0.0", "::ffff:127.0.0.1", None, ""]
    remote = [TEST_NET, "10.0.0.1", "8.8.8.8", "2001:db8::1", "example.com", "huggingface.co", "::ffff:192.0.2.1"]
    assert [netblock._is_local_host(h) for h in local] == [True] * len(local)
    assert [netblock._is_local_host(h) for h in remote] == [False] * len(remote)


def test_this_machines_own_name_counts_as_local_so_torchrun_can_label_its_processes(guard):
    own = socket.gethostname()
    assert netblock._is_local_host(own) and netblock._is_local_host(own.upper() + ".")
    assert not netblock._is_local_host(own + ".example.com")
    socket.getfqdn(own)  # what torch.distributed's elastic agent does; refused before the guard knew the name
    assert own not in netblock.blocked_attempts


def test_uninstall_restores_the_original_socket_methods():
    before = (socket.socket.__dict__.get("connect"), socket.socket.connect, socket.getaddrinfo)
    netblock.install()
    assert _guard_is_active()
    netblock.uninstall()
    assert (socket.socket.__dict__.get("connect"), socket.socket.connect, socket.getaddrinfo) == before
    assert not _guard_is_active() and not netblock.is_installed()


def test_sitecustomize_turns_the_guard_on_in_a_new_python_process():
    probe = textwrap.dedent(f"""
        import socket, threading
        assert "netblock" in socket.socket.connect.__module__, "guard not installed"
        try:
            socket.create_connection(("{TEST_NET}", 80), timeout=2)
        except Exception as error:
            print("outbound:", type(error).__name__)
        server = socket.create_server(("127.0.0.1", 0))
        threading.Thread(target=lambda: server.accept()[0].sendall(b"pong"), daemon=True).start()
        print("loopback:", socket.create_connection(server.getsockname(), timeout=5).recv(4))
    """)
    env = kernel_environment("quick")
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["outbound: NetworkBlockedError", "loopback: b'pong'"]
    assert "[network guard]" in done.stderr and TEST_NET in done.stderr


def test_without_the_variable_the_sitecustomize_leaves_sockets_alone():
    env = kernel_environment("quick")
    env["COURSE_BLOCK_NETWORK"] = "0"
    probe = "import socket; print('netblock' in getattr(socket.socket.connect, '__module__', ''))"
    done = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr

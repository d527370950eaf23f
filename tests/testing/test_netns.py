"""zactor.testing.netns: hosts made of network namespaces reach each other over TCP, the root
namespace reaches them through the gateway, link_down / partition drop packets silently and
are undone, and nothing is left behind (even by a process killed with SIGKILL)."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time

import pytest

from zactor.testing import netns
from zactor.testing.netns import GATEWAY, HostNetwork, NetnsError, cleanup_stale

# Echo server: prints its port once listening, then echoes every connection (one thread each).
ECHO_SERVER = """
import socket, sys, threading
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], 0)); srv.listen(16)
print(srv.getsockname()[1], flush=True)
def echo(c):
    with c:
        while (data := c.recv(65536)):
            c.sendall(data)
while True:
    threading.Thread(target=echo, args=(srv.accept()[0],), daemon=True).start()
"""

# Client: one round trip; prints "ok", "timeout" or the error's name (exit status 0 always).
CLIENT = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as s:
        s.sendall(b"ping"); print("ok" if s.recv(4) == b"ping" else "bad")
except socket.timeout:
    print("timeout")
except OSError as e:
    print(type(e).__name__)
"""


def _read_line(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    if not ready:
        raise AssertionError(f"{proc.args} printed nothing in {timeout} s")
    return proc.stdout.readline().decode().strip()


def start_echo(host, bind: str = "0.0.0.0") -> int:
    """An echo server in ``host`` (killed by the network's close); returns its port."""
    proc = host.popen([sys.executable, "-c", ECHO_SERVER, bind], stdout=subprocess.PIPE)
    return int(_read_line(proc))


def probe(host, address: str, port: int, timeout: float = 1.0) -> str:
    """One TCP round trip from ``host`` (a Host, or None for the root namespace)."""
    if host is None:
        try:
            with socket.create_connection((address, port), timeout=timeout) as s:
                s.sendall(b"ping")
                return "ok" if s.recv(4) == b"ping" else "bad"
        except socket.timeout:
            return "timeout"
    cp = host.run([sys.executable, "-c", CLIENT, address, str(port), str(timeout)],
                  timeout=timeout + 20, check=True)
    return cp.stdout.strip()


def test_hosts_reach_each_other_over_tcp(host_network):
    net = host_network(3)
    assert len({h.address for h in net.hosts}) == 3
    assert all(len(h.name) <= 15 for h in net.hosts)
    port = start_echo(net.hosts[1])
    assert probe(net.hosts[0], net.hosts[1].address, port) == "ok"
    assert probe(net.hosts[2], net.hosts[1].address, port) == "ok"
    # each host has its own loopback
    assert probe(net.hosts[1], "127.0.0.1", port) == "ok"
    assert probe(net.hosts[0], "127.0.0.1", port) == "ConnectionRefusedError"


def test_root_and_hosts_reach_each_other_via_gateway(host_network):
    net = host_network(2)
    assert net.gateway_address == str(net.subnet.network_address + 1)
    port = start_echo(net.hosts[0])
    assert probe(None, net.hosts[0].address, port) == "ok"
    # a server in the root namespace, on the gateway address, seen from a host
    with socket.socket() as srv:
        srv.bind((net.gateway_address, 0))
        srv.listen(1)
        client = net.hosts[1].popen([sys.executable, "-c", CLIENT, net.gateway_address,
                                     str(srv.getsockname()[1]), "5"], stdout=subprocess.PIPE)
        srv.settimeout(10)
        conn, peer = srv.accept()
        with conn:
            assert peer[0] == net.hosts[1].address
            conn.sendall(conn.recv(4))
        assert _read_line(client) == "ok"
        client.wait(timeout=10)


def test_link_down_is_silent_and_link_up_restores(host_network):
    net = host_network(2)
    h0, h1 = net.hosts
    port = start_echo(h1)
    conn = socket.create_connection((h1.address, port), timeout=5)
    with conn:
        conn.sendall(b"a")
        assert conn.recv(1) == b"a"
        h1.link_down()
        # new connections time out (no refusal, no unreachable error), from a host and root
        assert probe(h0, h1.address, port, timeout=1.0) == "timeout"
        assert probe(None, h1.address, port, timeout=1.0) == "timeout"
        # the open connection is not closed: what is sent now is just not answered...
        conn.settimeout(0.5)
        conn.sendall(b"b")
        with pytest.raises(socket.timeout):
            conn.recv(1)
        h1.link_up()
        # ...until the link is back and TCP retransmits it
        conn.settimeout(30)
        assert conn.recv(1) == b"b"
    assert probe(h0, h1.address, port) == "ok"


def test_partition_blocks_across_sides_only(host_network):
    net = host_network(4)
    port = {h.index: start_echo(h) for h in net.hosts}
    a = net.hosts
    net.partition([a[0], a[1]], [2, 3])
    assert probe(a[0], a[1].address, port[1]) == "ok"
    assert probe(a[3], a[2].address, port[2]) == "ok"
    assert probe(a[0], a[2].address, port[2], timeout=1.0) == "timeout"
    assert probe(a[3], a[1].address, port[1], timeout=1.0) == "timeout"
    for h in a:  # the gateway is on no side
        assert probe(None, h.address, port[h.index]) == "ok"
    with pytest.raises(ValueError):
        net.partition([0], [0, 1])
    net.heal()
    assert probe(a[0], a[2].address, port[2]) == "ok"
    assert probe(a[3], a[1].address, port[1]) == "ok"


# UDP receiver: prints its port, then the first datagram or "none" after 1.5 s.
UDP_RECEIVER = """
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", 0)); s.settimeout(1.5)
print(s.getsockname()[1], flush=True)
try:
    print(s.recv(16).decode(), flush=True)
except socket.timeout:
    print("none", flush=True)
"""


def udp_from_root(host) -> str:
    proc = host.popen([sys.executable, "-c", UDP_RECEIVER], stdout=subprocess.PIPE)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"hello", (host.address, int(_read_line(proc))))
    got = _read_line(proc)
    proc.wait(timeout=10)
    return got


def test_partition_from_the_gateway(host_network):
    net = host_network(2)
    h0, h1 = net.hosts
    port = {h.index: start_echo(h) for h in net.hosts}
    with socket.socket() as srv:  # a server in the root namespace, on the gateway address
        srv.bind((net.gateway_address, 0))
        srv.listen(8)
        root_port = srv.getsockname()[1]
        net.partition([GATEWAY], [h1])
        assert probe(None, h1.address, port[1], timeout=1.0) == "timeout"
        assert probe(h1, net.gateway_address, root_port, timeout=1.0) == "timeout"
        assert probe(None, h0.address, port[0]) == "ok"
        assert probe(h0, h1.address, port[1]) == "ok"
        # the ingress half on its own (no reply involved): a datagram from root is dropped
        assert udp_from_root(h1) == "none"
        assert udp_from_root(h0) == "hello"
        net.heal()
        assert probe(None, h1.address, port[1]) == "ok"
    with pytest.raises(ValueError):
        host_network(1, gateway=False).partition([GATEWAY], [0])


def _present() -> tuple[set, set]:
    return set(netns._netns_names()), set(netns._root_links())


def test_close_kills_processes_and_leaves_nothing(host_network):
    host_network(1)  # skips where namespaces cannot be made
    net = HostNetwork(2).start()
    names = net.names()
    assert len(names["netns"]) == 3 and len(names["links"]) == 1
    nss, links = _present()
    assert set(names["netns"]) <= nss and set(names["links"]) <= links
    sleeper = net.hosts[0].popen(["sleep", "600"])
    # a process it did not start itself, left in a namespace
    orphan = net.hosts[1].run(["sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!"],
                              check=True).stdout.strip()
    net.close()
    assert sleeper.returncode == -signal.SIGKILL
    assert not os.path.exists(f"/proc/{orphan}/cmdline") or \
        b"sleep" not in open(f"/proc/{orphan}/cmdline", "rb").read()
    nss, links = _present()
    assert not set(names["netns"]) & nss and not set(names["links"]) & links
    net.close()  # twice is fine


def test_two_networks_at_once_do_not_collide(host_network):
    one, two = host_network(2), host_network(2)
    assert not set(one.names()["netns"]) & set(two.names()["netns"])
    assert one.gateway_link != two.gateway_link
    assert not one.subnet.overlaps(two.subnet)
    for net in (one, two):
        port = start_echo(net.hosts[1])
        assert probe(net.hosts[0], net.hosts[1].address, port) == "ok"
        assert probe(None, net.hosts[1].address, port) == "ok"
    # the networks are separate: a host of one cannot reach the other's hosts
    port = start_echo(two.hosts[0])
    assert probe(one.hosts[0], two.hosts[0].address, port, timeout=1.0) in (
        "timeout", "OSError", "ConnectionRefusedError")


# A process that makes a network, starts a sleeper in a host, says what it made, then waits
# to be killed with SIGKILL: its atexit hook never runs.
CRASHER = """
import json, sys
from zactor.testing import HostNetwork
net = HostNetwork(2).start()
net.hosts[0].popen(["sleep", "600"], start_new_session=True)
print(json.dumps(net.names()), flush=True)
sys.stdin.read()
"""


def test_cleanup_stale_removes_leftovers_of_a_dead_pid(host_network):
    host_network(1)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    proc = subprocess.Popen([sys.executable, "-c", CRASHER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, env=env)
    names = json.loads(_read_line(proc))
    proc.kill()
    proc.wait(timeout=10)
    nss, links = _present()
    assert set(names["netns"]) <= nss and set(names["links"]) <= links
    removed = cleanup_stale()
    assert set(names["netns"]) | set(names["links"]) <= set(removed)
    nss, links = _present()
    assert not set(names["netns"]) & nss and not set(names["links"]) & links
    # a live pid's networks are not touched
    mine = host_network(1)
    assert not set(cleanup_stale()) & set(mine.names()["netns"] + mine.names()["links"])
    nss, links = _present()
    assert set(mine.names()["netns"]) <= nss


def test_available_says_why_without_root(monkeypatch):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    ok, why = netns._probe()
    assert not ok and "root" in why


def test_errors_name_the_command_and_its_stderr(host_network):
    net = host_network(1)
    with pytest.raises(NetnsError, match=r"sh -c echo boom >&2; exit 3.*exit 3.*boom"):
        net.hosts[0].run(["sh", "-c", "echo boom >&2; exit 3"], check=True)
    with pytest.raises(NetnsError, match=r"ip -n .* does-not-exist"):
        netns._run(["ip", "-n", net.hosts[0].name, "link", "set", "does-not-exist", "up"])
    started = time.monotonic()
    with pytest.raises(NetnsError, match="timed out"):
        net.hosts[0].run(["sleep", "30"], timeout=0.5)
    assert time.monotonic() - started < 10

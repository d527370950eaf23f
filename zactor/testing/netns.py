"""Separate "hosts" on one machine, made of Linux network namespaces, for cluster tests, the
chaos harness (link-down and partition faults) and benchmarks.

    with HostNetwork(3) as net:
        server = net.hosts[1].popen([sys.executable, "-m", "http.server", "8000"])
        net.hosts[0].run(["curl", f"http://{net.hosts[1].address}:8000"], timeout=10)
        net.hosts[1].link_down()                 # silent host: its sockets stay open
        net.partition([0], [1, 2]); net.heal()

Layout (why): the root namespace is left alone except for one veth, the gateway, so that a
driver there can reach the hosts. The bridge lives in a dedicated "switch" namespace
(``<tag>s``); each host namespace (``<tag>h<i>``) has ``lo`` up and an ``eth0`` whose peer
``p<i>`` is a port of that bridge. Interface names other than the gateway's are private to
their namespace, so only namespace names and the gateway carry the unique tag
``<prefix><pid>x<counter>`` (gateway: ``<prefix><pid>g<counter>``, at most 15 characters).

Only the network is separate: processes in the hosts share the file system (/dev/shm
included), pids and users with the rest of the machine. IPv4 only (faults ignore IPv6).

Faults are silent packet loss, never an error a socket could see at once: every namespace
holds permanent neighbour (ARP) entries for every address, so no address resolution can fail
and turn into EHOSTUNREACH after 3 s.
* ``link_down()`` sets the host's bridge port down: its ``eth0`` loses carrier (its traffic
  is dropped), the bridge stops delivering to it, its sockets stay open; ``link_up()`` undoes.
* ``partition(a, b)``: this machine has no nft/iptables binary and its kernel has no tc drop
  action (no act_gact, cls_matchall, sch_netem), so each host of one side routes each address
  of the other side (a /32 route) to ``sink``, a veth whose peer is down, which drops
  what it is given. Hosts of one side still reach each other and the gateway; ``heal()``
  removes the routes. Established connections are re-routed at their next packet. The
  gateway (``GATEWAY``) may be on a side too: its hosts then also filter what comes from it
  (strict rp_filter), so nothing is added to the root namespace.

Cleanup: ``close()`` (or leaving the ``with``) kills the processes started in the hosts (and
any other process left in its namespaces), deletes the gateway veth and the namespaces (which
takes their veths and the bridge with them). An atexit hook closes networks still open;
``cleanup_stale(prefix)`` removes leftovers of processes that no longer exist (a test run
killed with SIGKILL), and every new network calls it first.
"""

from __future__ import annotations

import atexit
import ipaddress
import itertools
import os
import re
import shutil
import subprocess
import threading
import zlib
from typing import Iterable, Sequence

from zactor.testing._ip import (  # noqa: F401 - _run and the listings are used by tests
    NetnsError,
    _batch,
    _kill_netns_processes,
    _netns_names,
    _pid_alive,
    _root_links,
    _run,
    _wait_links_up,
)

DEFAULT_PREFIX = "zt"
GATEWAY = "gateway"  # the root namespace, as a side of HostNetwork.partition
_counter = itertools.count()
_open_networks: set = set()
_open_lock = threading.Lock()


def _mac(address: ipaddress.IPv4Address) -> str:
    # locally administered, derived from the address, so that neighbour entries can be
    # written before the interfaces exist
    return "02:7a:" + ":".join(f"{b:02x}" for b in address.packed)


_available: tuple[bool, str] | None = None


def available() -> tuple[bool, str]:
    """(True, "") when namespaces, veths and bridges can be made here; else (False, why):
    tests skip with that reason on machines without root or iproute2. The check makes and
    deletes a probe namespace, as root in a container may still lack CAP_SYS_ADMIN."""
    global _available
    if _available is None:
        _available = _probe()
    return _available


def _probe() -> tuple[bool, str]:
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return False, "network namespaces need root (euid 0)"
    if shutil.which("ip") is None:
        return False, "the `ip` command (iproute2) is missing"
    name = f"{DEFAULT_PREFIX}{os.getpid()}p"
    try:
        _run(["ip", "netns", "add", name])
        try:
            _batch(name, ["link add br0 type bridge", "link add v0 type veth peer name v1"])
        finally:
            _run(["ip", "netns", "del", name], check=False)
    except NetnsError as exc:
        return False, f"cannot make a namespace with a bridge and a veth: {exc}"
    return True, ""


def cleanup_stale(prefix: str = DEFAULT_PREFIX) -> list[str]:
    """Remove namespaces and gateway veths named ``<prefix><pid>...`` whose pid is dead
    (a crashed or SIGKILLed test run). Leftovers of live pids are left alone, as they
    may be a parallel run's. Returns the names removed."""
    # <tag>s, <tag>h<i>, and available()'s probe <prefix><pid>p
    ns_re = re.compile(rf"^{re.escape(prefix)}(\d+)(?:x\d+(?:s|h\d+)|p)$")
    link_re = re.compile(rf"^{re.escape(prefix)}(\d+)g\d+$")
    removed = []
    for name in _root_links():
        m = link_re.match(name)
        if m and not _pid_alive(int(m.group(1))):
            if _run(["ip", "link", "del", name], check=False).returncode == 0:
                removed.append(name)
    for name in _netns_names():
        m = ns_re.match(name)
        if m and not _pid_alive(int(m.group(1))):
            _kill_netns_processes(name)
            _run(["ip", "netns", "del", name])
            removed.append(name)
    return removed


class Host:
    """One namespace of a :class:`HostNetwork`: ``name`` (the namespace), ``address``."""

    def __init__(self, network: HostNetwork, index: int, name: str,
                 address: ipaddress.IPv4Address):
        self.network = network
        self.index = index
        self.name = name
        self.address = str(address)
        self.mac = _mac(address)
        self.port = f"p{index}"  # its bridge port, in the switch namespace

    def __repr__(self) -> str:
        return f"Host({self.name!r}, {self.address})"

    def _argv(self, argv: Sequence[str]) -> list[str]:
        # `ip netns exec` enters the namespace and execs argv: the Popen's pid is argv's own
        # process, so kill() and wait() act on it directly
        return ["ip", "netns", "exec", self.name, *[os.fspath(a) for a in argv]]

    def popen(self, argv: Sequence[str], **kw) -> subprocess.Popen:
        """Start ``argv`` inside this host (subprocess.Popen keywords). The network kills
        and reaps it on close if it is still running."""
        proc = subprocess.Popen(self._argv(argv), **kw)
        self.network._procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], *, timeout: float = 30.0, check: bool = False,
            **kw) -> subprocess.CompletedProcess:
        """Run ``argv`` inside this host to completion (killed at ``timeout``); output is
        captured as text unless told otherwise. ``check`` raises NetnsError on failure."""
        kw.setdefault("capture_output", "stdout" not in kw and "stderr" not in kw)
        kw.setdefault("text", True)
        full = self._argv(argv)
        try:
            cp = subprocess.run(full, timeout=timeout, **kw)
        except subprocess.TimeoutExpired as exc:
            raise NetnsError(f"`{' '.join(full)}` timed out after {timeout} s") from exc
        if check and cp.returncode != 0:
            raise NetnsError(f"`{' '.join(full)}` failed (exit {cp.returncode}): "
                             f"{(cp.stderr or '').strip()}")
        return cp

    def link_down(self) -> None:
        """Cut this host off the switch: packets to and from it are dropped silently, its
        sockets and addresses stay as they are (a pulled cable)."""
        _run(["ip", "-n", self.network.switch, "link", "set", self.port, "down"])

    def link_up(self) -> None:
        _run(["ip", "-n", self.network.switch, "link", "set", self.port, "up"])
        _wait_links_up([(self.network.switch, self.port), (self.name, "eth0")])


class HostNetwork:
    """``n`` hosts on one bridge. ``prefix``: letters starting every name (default "zt");
    ``subnet``: an IPv4 network such as "10.20.30.0/24" (default: a free 10.x.y.0/24 chosen
    from the pid and a counter, not overlapping any route of the root namespace);
    ``gateway``: give the root namespace an address on the bridge, ``gateway_address``
    (the subnet's first address; hosts get the following ones)."""

    def __init__(self, n: int, *, prefix: str | None = None, subnet: str | None = None,
                 gateway: bool = True):
        if n < 1:
            raise ValueError("a HostNetwork needs at least one host")
        self.prefix = prefix or DEFAULT_PREFIX
        if not re.fullmatch(r"[a-z]{1,4}", self.prefix):
            # letters only: names are parsed back as <prefix><pid>... by cleanup_stale
            raise ValueError(f"prefix must be 1-4 lowercase letters, not {self.prefix!r}")
        pid, count = os.getpid(), next(_counter)
        self.tag = f"{self.prefix}{pid}x{count}"
        self.switch = self.tag + "s"
        self.gateway_link = f"{self.prefix}{pid}g{count}" if gateway else None
        if self.gateway_link and len(self.gateway_link) > 15:
            raise ValueError(f"interface name {self.gateway_link!r} is over 15 characters")
        self._n = n
        self._subnet_arg = subnet
        self._seed = f"{pid}:{count}"
        self.subnet: ipaddress.IPv4Network | None = None
        self.gateway_address: str | None = None
        self.hosts: list[Host] = []
        self._procs: list[subprocess.Popen] = []
        self._made: list[str] = []  # namespaces created so far, for a cleanup after a failure
        self._cut: set[tuple[int, str]] = set()  # (host index, address) routed to its sink
        self._rp_filter: set[int] = set()  # hosts with strict reverse-path filtering on
        self._closed = False

    # -- setup ------------------------------------------------------------------------
    def __enter__(self) -> HostNetwork:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    def _choose_subnet(self) -> ipaddress.IPv4Network:
        used = []
        for argv in (["ip", "-4", "route", "show", "table", "all"], ["ip", "-4", "-o", "addr"]):
            for word in _run(argv).stdout.split():
                try:
                    used.append(ipaddress.ip_network(word, strict=False))
                except ValueError:
                    pass
        if self._subnet_arg:
            net = ipaddress.ip_network(self._subnet_arg)
            if net.num_addresses < self._n + 4 or net.version != 4:
                raise ValueError(f"subnet {net} is too small for {self._n} hosts")
            clash = [u for u in used if u.overlaps(net) and u.prefixlen > 0]
            if self.gateway_link and clash:
                raise NetnsError(f"subnet {net} overlaps root namespace routes {clash}")
            return net
        if self._n > 250:
            raise ValueError("the automatic /24 subnet holds at most 250 hosts")
        for attempt in range(512):
            h = zlib.crc32(f"{self._seed}:{attempt}".encode())
            net = ipaddress.ip_network(f"10.{(h >> 8) & 255}.{h & 255}.0/24")
            if not any(u.overlaps(net) and u.prefixlen > 0 for u in used):
                return net
        raise NetnsError("no free 10.x.y.0/24 subnet found")

    def start(self) -> HostNetwork:
        with _open_lock:
            _open_networks.add(self)
        try:
            cleanup_stale(self.prefix)
            self._setup()
        except BaseException:
            try:
                self.close()
            except NetnsError:
                pass  # the setup error below is the one to report
            raise
        return self

    def _setup(self) -> None:
        self.subnet = net = self._choose_subnet()
        plen = net.prefixlen
        gw = net.network_address + 1
        self.gateway_address = str(gw) if self.gateway_link else None
        self.hosts = [Host(self, i, f"{self.tag}h{i}", net.network_address + 2 + i)
                      for i in range(self._n)]
        for name in [self.switch] + [h.name for h in self.hosts]:
            _run(["ip", "netns", "add", name])
            self._made.append(name)
        root = [f"link add {h.port} netns {self.switch} type veth peer name eth0 netns {h.name}"
                for h in self.hosts]
        switch = ["link add br0 type bridge", "link set br0 up"]
        switch += [f"link set {h.port} master br0 up" for h in self.hosts]
        if self.gateway_link:
            g = self.gateway_link
            root += [f"link add {g} address {_mac(gw)} type veth peer name gw netns {self.switch}",
                     f"addr add {gw}/{plen} dev {g}", f"link set {g} up"]
            root += [f"neigh replace {h.address} lladdr {h.mac} dev {g} nud permanent"
                     for h in self.hosts]
            switch.append("link set gw master br0 up")
        _batch(None, root)
        _batch(self.switch, switch)
        peers = [(h.address, h.mac) for h in self.hosts]
        if self.gateway_link:
            peers.append((str(gw), _mac(gw)))
        for h in self.hosts:
            _batch(h.name, [
                "link set lo up",
                f"link set eth0 address {h.mac}",
                f"addr add {h.address}/{plen} dev eth0",
                "link set eth0 up",
                # the partition sink: its peer stays down, so what is routed to it is dropped
                "link add sink type veth peer name sinkp",
                "link set sink up",
            ] + [f"neigh replace {a} lladdr {m} dev eth0 nud permanent"
                 for a, m in peers if a != h.address])
        links = [(self.switch, h.port) for h in self.hosts] + [(h.name, "eth0") for h in self.hosts]
        if self.gateway_link:
            links += [(self.switch, "gw"), (None, self.gateway_link)]
        _wait_links_up(links)

    # -- faults -----------------------------------------------------------------------
    def _resolve(self, hosts: Iterable[Host | int | str]) -> list[Host | str]:
        out: list[Host | str] = []
        for h in hosts:
            if h == GATEWAY:
                if self.gateway_address is None:
                    raise ValueError("this network has no gateway (gateway=False)")
                out.append(GATEWAY)
                continue
            host = self.hosts[h] if isinstance(h, int) else h
            if host.network is not self:
                raise ValueError(f"{host} is not a host of this network")
            out.append(host)
        return out

    def partition(self, a_hosts: Iterable[Host | int | str],
                  b_hosts: Iterable[Host | int | str]) -> None:
        """Drop every packet between a host of ``a_hosts`` and one of ``b_hosts`` (Host
        objects, indices, or GATEWAY for the root namespace), silently and both ways. Hosts
        of one side still reach each other, and the gateway unless it is on a side.
        Partitions add up until :meth:`heal`."""
        a, b = self._resolve(a_hosts), self._resolve(b_hosts)
        if {getattr(h, "index", h) for h in a} & {getattr(h, "index", h) for h in b}:
            raise ValueError("a host cannot be on both sides of a partition")
        for side, other in ((a, b), (b, a)):
            for h in side:
                if h == GATEWAY:
                    continue  # the root namespace is left alone: its hosts drop both ways
                lines = []
                for o in other:
                    address, mac = ((self.gateway_address, _mac(self.subnet.network_address + 1))
                                    if o == GATEWAY else (o.address, o.mac))
                    if o == GATEWAY and h.index not in self._rp_filter:
                        # strict reverse-path filtering drops what comes from the gateway
                        # once its address is routed to the sink, not to eth0: the ingress
                        # half of the cut, with no rule in the root namespace
                        h.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/conf/all/rp_filter"],
                              timeout=10, check=True)
                        self._rp_filter.add(h.index)
                    if (h.index, address) not in self._cut:
                        self._cut.add((h.index, address))
                        lines += [f"route replace {address}/32 dev sink",
                                  f"neigh replace {address} lladdr {mac} dev sink nud permanent"]
                _batch(h.name, lines)

    def heal(self) -> None:
        """Undo every partition (link_down is separate: undo it with link_up)."""
        by_host: dict[int, list[str]] = {}
        for index, address in sorted(self._cut):
            by_host.setdefault(index, []).extend(
                [f"route del {address}/32 dev sink", f"neigh del {address} dev sink"])
        for index, lines in by_host.items():
            _batch(self.hosts[index].name, lines)
        self._cut.clear()

    # -- cleanup ----------------------------------------------------------------------
    def names(self) -> dict[str, list[str]]:
        """What this network adds to the root namespace: its namespaces and root links."""
        return {"netns": [self.switch] + [h.name for h in self.hosts],
                "links": [self.gateway_link] if self.gateway_link else []}

    def close(self) -> None:
        """Kill the hosts' processes and remove the namespaces and the gateway veth. Safe to
        call twice and after a failed start."""
        if self._closed:
            return
        self._closed = True
        errors = []
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                errors.append(f"process {proc.pid} {proc.args} did not exit after SIGKILL")
        if self.gateway_link and self.gateway_link in _root_links():
            # deleted here, not left to the namespace teardown, which the kernel runs later
            _run(["ip", "link", "del", self.gateway_link], check=False)
        present = set(_netns_names())
        for name in reversed(self._made):
            if name not in present:
                continue
            try:
                _kill_netns_processes(name)
                _run(["ip", "netns", "del", name])
            except NetnsError as exc:
                errors.append(str(exc))
        with _open_lock:
            _open_networks.discard(self)
        if errors:
            raise NetnsError("; ".join(errors))


@atexit.register
def _close_open_networks() -> None:
    with _open_lock:
        networks = list(_open_networks)
    for network in networks:
        try:
            network.close()
        except Exception:  # noqa: BLE001 - at exit, clean up the rest and keep going
            pass

"""zactor.benchmarks.raw_tcp runs on loopback and between namespaced hosts (tiny sizes:
figures are not checked, only that every placement of server and client works)."""

from __future__ import annotations

from zactor.benchmarks.raw_tcp import main, raw_tcp_copy


def test_loopback():
    assert raw_tcp_copy(1 << 20, repeat=2) > 0


def test_between_hosts_and_root(host_network):
    net = host_network(2)
    a, b = net.hosts
    assert raw_tcp_copy(1 << 20, b, a, repeat=2) > 0   # host -> host
    assert raw_tcp_copy(1 << 20, b, None, repeat=2) > 0  # root -> host
    assert raw_tcp_copy(1 << 20, None, a, repeat=2) > 0  # host -> root (gateway)


def test_cli(capsys):
    main(["--size", "1", "--repeat", "2"])
    assert "GB/s" in capsys.readouterr().out

"""The ``host_network`` fixture: a factory of :class:`zactor.testing.HostNetwork` ("hosts"
made of network namespaces), registered for every test by tests/conftest.py.

    def test_two_nodes(host_network):
        net = host_network(2)              # started; closed and checked after the test
        net.hosts[0].popen([...]); net.partition([0], [1])

Tests using it skip, with the reason, where namespaces cannot be made (not root, no `ip`).
"""

from __future__ import annotations

import pytest

from zactor.testing.netns import HostNetwork, NetnsError, _netns_names, _root_links, available


@pytest.fixture
def host_network():
    ok, why = available()
    if not ok:
        pytest.skip(f"network namespaces unavailable: {why}")
    made: list[HostNetwork] = []

    def make(n: int, **kw) -> HostNetwork:
        net = HostNetwork(n, **kw).start()
        made.append(net)
        return net

    yield make
    errors = []
    for net in reversed(made):
        try:
            net.close()
        except NetnsError as exc:
            errors.append(str(exc))
    netns, links = set(_netns_names()), set(_root_links())
    left = [name for net in made for name in net.names()["netns"] if name in netns]
    left += [name for net in made for name in net.names()["links"] if name in links]
    assert not errors and not left, f"host_network left {left}; errors {errors}"

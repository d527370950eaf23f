"""Helpers for tests, the chaos harness and benchmarks (not used by the runtime)."""

from zactor.testing.netns import GATEWAY, Host, HostNetwork, NetnsError, available, cleanup_stale

__all__ = ["GATEWAY", "Host", "HostNetwork", "NetnsError", "available", "cleanup_stale"]

"""Helpers for tests, the chaos harness and benchmarks (not used by the runtime)."""

from zactor.testing.netns import Host, HostNetwork, NetnsError, available, cleanup_stale

__all__ = ["Host", "HostNetwork", "NetnsError", "available", "cleanup_stale"]

"""Utilities on top of the core API, as in ``ray.util``."""

from zactor.util.actor_pool import ActorPool

__all__ = ["ActorPool"]

"""The control store (GCS): chain-replicated, sharded SQLite tables with pub-sub.

Public pieces: ``GcsClient`` (every component's way in), ``LocalControlStore`` /
``start_control_store`` (start a coordinator and replicas as child processes).
"""

from zactor.control.client import GcsClient, WriteFuture
from zactor.control.cluster import LocalControlStore, start_control_store
from zactor.control.schema import TABLES

__all__ = ["GcsClient", "WriteFuture", "LocalControlStore", "start_control_store", "TABLES"]

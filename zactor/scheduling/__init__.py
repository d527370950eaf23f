"""Scheduling: resource accounting and the local (per-node) scheduler state machine.

The global scheduler and placement policies join here with the cluster issue.
"""

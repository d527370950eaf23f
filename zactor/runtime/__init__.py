"""The runtime: what happens between ``f.remote()`` and its result (driver core, worker
process, task execution, actors). Built up by the core-runtime issue."""

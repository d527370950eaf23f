"""The chaos harness: a real zactor cluster, workloads whose answers are checked exactly,
and faults injected on a seeded schedule; it reports what broke, never hides it.

    python -m chaos run --nodes 3 --duration 60 --seed 1 [--netns] [--report out.json]
    zactor chaos ...           (the same command)

Modules: cli (options, the run), cluster (start/stop with the zactor CLI, find processes),
schedule (the seeded fault plan), faults (inject one), driver + workloads (the checked work,
run in a separate driver process), report (the summary table and the JSON report).
"""

FAULT_KINDS = ("kill-node", "kill-worker", "kill-gcs", "kill-scheduler", "pause-node",
               "partition", "link-down")
#: faults that cut packets: only possible with each node in its own network namespace
NETNS_ONLY = frozenset({"partition", "link-down"})

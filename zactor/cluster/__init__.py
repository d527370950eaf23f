"""A cluster of nodes: node registration and heartbeats in the control store, the messages
between node managers and the global scheduler, and the processes ``zactor start`` runs."""

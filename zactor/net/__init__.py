"""Small networking helpers shared by every zactor process: sockets, liveness constants."""

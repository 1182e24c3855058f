"""``wfl-async install``: put wfl_async on a system's remote side from this driver (docs/installing-on-a-cluster.md)."""

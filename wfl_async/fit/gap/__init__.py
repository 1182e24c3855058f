"""GAP fits with ``gap_fit`` (PyPI ``quippy-ase``; ``wfl-async install SYSTEM --extra gap`` on a cluster)."""

"""GAP fits with ``gap_fit`` (PyPI ``quippy-ase``; ``pip install 'wfl_async[gap]'``)."""

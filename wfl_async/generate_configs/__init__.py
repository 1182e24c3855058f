"""wfl's older module paths (``wfl.generate_configs``), kept for scripts written against them."""

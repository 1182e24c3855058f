"""Calculator-based operations (same module paths as ``wfl.calculators``)."""

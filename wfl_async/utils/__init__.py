"""Helpers shared by the operations (same module paths as ``wfl.utils``)."""

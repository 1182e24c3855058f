"""Operations that generate configurations (same module paths as ``wfl.generate``)."""

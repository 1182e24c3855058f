"""Private implementation of :mod:`wfl_async.configset` (import from there)."""

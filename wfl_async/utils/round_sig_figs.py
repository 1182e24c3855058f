"""Floats rounded to significant figures, as text (wfl's ``wfl.utils.round_sig_figs``)."""

from __future__ import annotations

__all__ = ["round_sig_figs"]


def round_sig_figs(value: float, n_sig_figs: int) -> str:
    """``value`` rounded to ``n_sig_figs`` significant figures, as the shortest text (``"4.5"``, ``"1e+03"``)."""
    return f"{float(f'{value:.{n_sig_figs}g}'):g}"

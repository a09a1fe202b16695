"""Figures drawn from the arrays an analysis saved (matplotlib)."""

"""Analyses over a data set: calculation paths and filter states (more to come)."""

"""Composition root: the hazardwatch CLI and runtime wiring."""

__version__ = "0.1.0"

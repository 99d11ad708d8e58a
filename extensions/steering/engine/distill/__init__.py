"""Distilling a system prompt into a steering vector (being split into modules; see _old.py)."""

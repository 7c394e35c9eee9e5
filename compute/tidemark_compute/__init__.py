"""Tidemark compute component."""

"""Tidemark playground component."""

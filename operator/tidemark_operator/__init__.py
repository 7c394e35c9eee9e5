"""Tidemark operator component."""

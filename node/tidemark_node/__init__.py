"""Tidemark node component."""

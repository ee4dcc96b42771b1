"""Coca AI memory service."""

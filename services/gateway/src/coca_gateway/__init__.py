"""Coca AI gateway service."""

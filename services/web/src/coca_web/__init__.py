"""Coca AI web service."""

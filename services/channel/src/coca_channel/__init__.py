"""Coca AI channel service."""

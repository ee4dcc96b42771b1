"""Coca AI agent service."""

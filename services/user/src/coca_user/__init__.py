"""Coca AI user service."""

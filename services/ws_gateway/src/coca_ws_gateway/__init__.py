"""Coca AI ws_gateway service."""

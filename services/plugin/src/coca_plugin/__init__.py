"""Coca AI plugin service."""

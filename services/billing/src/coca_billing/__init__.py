"""Coca AI billing service."""

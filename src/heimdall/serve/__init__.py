"""Heimdall serve stage."""

"""Heimdall eval stage."""

"""Heimdall models stage."""

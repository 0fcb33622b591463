"""Heimdall export stage."""

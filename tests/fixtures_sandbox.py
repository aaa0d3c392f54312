"""Sandbox fixtures (filled in with the sandbox)."""

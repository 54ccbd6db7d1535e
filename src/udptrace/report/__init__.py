"""Showing results: distributions, the terminal report, JSON lines."""

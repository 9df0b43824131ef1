"""Utilities shared by the command-line tools."""

"""Datasets shipped with specc (package data)."""

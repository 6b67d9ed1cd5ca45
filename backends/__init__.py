"""Backends, installed as `specc.backends`; see specc.backend for the registry."""

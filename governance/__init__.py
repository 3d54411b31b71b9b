"""Roles, logins and grants declared in YAML, applied and checked (issue #6)."""

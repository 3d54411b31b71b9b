"""Governance: roles, logins, grants and ownership declared in ``roles.yaml``, applied and
checked against the catalog. See ``docs/governance.md``."""

from governance.engine import apply, check
from governance.people import add_user, demo_users, remove_user

__all__ = ["add_user", "apply", "check", "demo_users", "remove_user"]

"""Users: accounts and roles, sign-in (passwords, tokens, lock-out), the first admin."""

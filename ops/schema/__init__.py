"""The schema: numbered SQL migrations and the command that applies them."""

"""The long-running commands and the ones a user types first: up, writer,
broadcaster, produce, connect, token (and the demo)."""

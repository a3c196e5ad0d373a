"""Operator commands: status, verify, repair, replay, dead letters and the
maintenance jobs, with their SQL."""

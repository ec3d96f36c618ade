"""Turns a submission into verdicts (languages, compile, tests, checkers)."""

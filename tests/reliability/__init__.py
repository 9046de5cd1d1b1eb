"""Reliability and security promises: never break the app, never lose a count, never leak a
secret. docs/reliability.md maps every promise to the test here that proves it."""

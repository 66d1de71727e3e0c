"""Subcommands of the `attnlab` command line, one module each."""

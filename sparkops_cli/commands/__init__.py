"""Subcommands of `sparkops`, one module each, each exporting `command`."""

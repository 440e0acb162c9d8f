"""The command line: options, output for people and scripts, exit codes."""

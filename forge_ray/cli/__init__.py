"""The `forge` command line: `forge --help` lists the subcommands."""

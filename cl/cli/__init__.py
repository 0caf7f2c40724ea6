"""The ``cl`` command line: one table of subcommands (``table``), the commands by area beside it.

``stack`` runs the service, ``evaluation`` measures it, ``security`` manages keys and the audit
trail, ``admin`` steers a running service's versions through :mod:`cl.client`.
"""

from cl.cli.table import COMMANDS, Command, build_parser, main

__all__ = ["COMMANDS", "Command", "build_parser", "main"]

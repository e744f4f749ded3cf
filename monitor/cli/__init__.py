"""The ``driftwarden`` command line (:mod:`monitor.cli.app`) and its ``check`` command."""

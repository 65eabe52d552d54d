"""The ``netlapse`` command line: start the embedded stack, talk to a server, write reports."""

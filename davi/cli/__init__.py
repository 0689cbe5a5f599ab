"""The command line: the installed ``davi`` command. Nothing else in the package imports this layer."""

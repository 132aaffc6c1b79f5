"""The ``jaxir`` command line: one short module per subcommand (parse flags, call the library)."""

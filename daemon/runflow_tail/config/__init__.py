"""The configuration: ``model`` (every option, its default and what is valid), ``alerts``
(the ``[[alerts]]`` rules), ``load`` (file < environment < flags) and ``problems`` (each
problem described for a person: source, key, masked value, what is expected)."""

"""The package's version and how it names itself to the servers it talks to."""

__version__ = "0.1.0"
USER_AGENT = f"runflow-tail/{__version__}"

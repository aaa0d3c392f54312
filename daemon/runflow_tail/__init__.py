"""runflow-tail: get Runflow run logs out of the Runflow API into the places people act on them."""

__version__ = "0.1.0"

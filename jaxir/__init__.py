"""jaxir: JAX-native neural information retrieval."""

__version__ = "0.1.0"

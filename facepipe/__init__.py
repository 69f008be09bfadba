"""facepipe: find, embed and index every face in a photo collection."""

__version__ = "0.1.0"

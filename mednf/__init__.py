"""mednf: medical datasets as neural fields (MedFuncta / MedNF)."""

__version__ = "0.1.0"

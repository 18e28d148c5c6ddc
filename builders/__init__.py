"""Builder files (one TOML per sub-dataset), shipped in the wheel as ``mednf.builders``; data only.

Loaded by :mod:`mednf.specs`; see ``chestnf.toml`` for the fields.
"""

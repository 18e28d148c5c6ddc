"""Builder files (one TOML per sub-dataset), shipped in the wheel as ``mednf.builders``; data only.

Loaded by :mod:`mednf.sources.spec`; see ``chestnf.toml`` for the fields.
"""

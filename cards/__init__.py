"""Dataset-card templates, shipped in the wheel as ``mednf.cards``; rendered by :mod:`mednf.card`."""

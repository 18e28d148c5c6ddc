"""The one way mednf imports a library that not every install has, or that only some commands need.

``optional_import("nibabel")`` imports the module when it is first needed and, if it is missing, raises
:class:`MissingDependencyError`, one line that names what needed it and the extra to install
(``pip install "mednf[nifti]"``). Modelled on torchgeo's ``lazy_import``. Importing through here, inside
the function that needs the library, keeps ``import mednf`` and the CLI's start light and lets a reader
see every optional dependency in one table (:data:`EXTRAS`).
"""

from __future__ import annotations

import importlib
from types import ModuleType

from mednf.errors import ConfigError

# top-level module → the pyproject extra that installs it (None: a required dependency of mednf)
EXTRAS: dict[str, str | None] = {
    "nibabel": "nifti",
    "scipy": "nifti",
    "fsspec": "remote",
    "tensorboard": "tensorboard",
    "medmnist": "medmnist",
    "datasets": "hf",
    "huggingface_hub": None,
    "sklearn": "tasks",
    "matplotlib": None,
}
_PACKAGES = {"sklearn": "scikit-learn"}  # the distribution's name where it differs from the module's


class MissingDependencyError(ConfigError, ImportError):
    """A library that a feature needs is not installed (the message names the install command)."""


def install_command(module: str) -> str:
    """The pip command that installs the distribution of ``module`` for mednf."""
    top = module.split(".")[0]
    extra = EXTRAS.get(top)
    return f'pip install "mednf[{extra}]"' if extra else f"pip install {_PACKAGES.get(top, top)}"


def missing_message(module: str, needed_for: str) -> str:
    """One line: what needs ``module`` and how to install it. A library of an extra names the extra; a required
    one (an install that lost it) names the package itself."""
    top = module.split(".")[0]
    how = f"; run {install_command(module)}" if EXTRAS.get(top) else f": {install_command(module)}"
    return f"{needed_for} needs {top}, which is not installed{how}"


def optional_import(module: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)``, or a :class:`MissingDependencyError` with :func:`missing_message`
    (``needed_for`` names the feature, e.g. ``'[source] kind = "nifti"'``)."""
    try:
        return importlib.import_module(module)
    except ImportError:  # also a None in sys.modules, which marks a module as blocked
        raise MissingDependencyError(missing_message(module, needed_for)) from None

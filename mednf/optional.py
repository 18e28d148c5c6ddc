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
    "aiohttp": "remote",
    "tensorboard": "tensorboard",
    "medmnist": "medmnist",
    "datasets": None,
    "sklearn": None,
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


def optional_import(module: str, needed_for: str) -> ModuleType:
    """``importlib.import_module(module)``, or a one-line :class:`MissingDependencyError` naming ``needed_for``
    (e.g. ``'[source] kind = "nifti"'``) and :func:`install_command`."""
    try:
        return importlib.import_module(module)
    except ImportError:  # also a None in sys.modules, which marks a module as blocked
        top = module.split(".")[0]
        raise MissingDependencyError(f"{needed_for} needs {top}, which is not installed; run "
                                     f"{install_command(module)}") from None

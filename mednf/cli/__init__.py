"""The ``mednf`` command line (click).

User mistakes and environment faults (a missing folder, a full disk, too little memory) print one line
``error: …``, no traceback, and exit with status 2 when the command line is wrong, 1 when the command ran and
failed (:mod:`mednf.cli.errors`); ``MEDNF_DEBUG=1`` shows the traceback instead.

Commands load lazily: :data:`COMMANDS` names the module of each, and that module (with the torch, numpy and
mednf stages it imports at its top) is imported only when its command runs or shows its own ``--help``.
So ``mednf --help`` imports no command module, and ``mednf list`` does not pay for the imports of
``mednf decode``, while every mednf import still stands at the top of its file.
"""

from __future__ import annotations

import logging

import click

from mednf.cli.errors import debug
from mednf.cli.lazy import LazyCommand, LazyGroup

COMMANDS = {
    "build": LazyCommand("mednf.cli.build", "build", "Build the MedNF sub-dataset NAME."),
    "cache": LazyCommand("mednf.cli.cache", "cache", "List or remove the datasets in the cache ($MEDNF_HOME)."),
    "classify": LazyCommand("mednf.cli.views", "classify", "Classify NAME's latents beside its raw pixels."),
    "decode": LazyCommand("mednf.cli.views", "decode", "Decode latents of NAME to a PNG grid or a .npy array."),
    "demo": LazyCommand("mednf.cli.build", "demo", "Meta-learn and fit generated phantoms (CPU, ~1 minute)."),
    "download": LazyCommand("mednf.cli.publish", "download", "Download a published dataset into the cache, verified."),
    "encode": LazyCommand("mednf.cli.views", "encode", "Fit latents for the images of an .npz into NAME."),
    "eval": LazyCommand("mednf.cli.views", "eval_", "Compare NAME's decoded latents with the source images."),
    "export": LazyCommand("mednf.cli.publish", "export", "Export NAME for Zenodo or the Hugging Face Hub."),
    "import-official": LazyCommand("mednf.cli.publish", "import_official",
                                   "Convert the official MedNF release into mednf's format."),
    "info": LazyCommand("mednf.cli.info", "info", "Summarise a built dataset (sizes, PSNR, licence)."),
    "inpaint": LazyCommand("mednf.cli.views", "inpaint", "Fill the unobserved pixels of IMAGES in NAME's space."),
    "list": LazyCommand("mednf.cli.catalogue", "list_builders", "List the builders and where each stands here."),
    "presets": LazyCommand("mednf.cli.catalogue", "presets", "List the engine presets."),
}


@click.group(name="mednf", cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="mednf")
def main() -> None:
    """mednf: medical datasets as neural fields (MedFuncta)."""
    logging.raiseExceptions = debug()  # a log write failing (full disk) must not print a traceback

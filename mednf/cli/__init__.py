"""The ``mednf`` command line (click).

User mistakes and environment faults (a missing folder, a full disk, too little memory) print one line
``error: …`` and exit with status 2, no traceback (:mod:`mednf.cli.errors`); ``MEDNF_DEBUG=1`` shows the
traceback instead.

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
    "build": LazyCommand("mednf.cli.build", "build", "Build the MedNF sub-dataset NAME (a builder name, see "
                         "`mednf list`, or a builder .toml file)."),
    "classify": LazyCommand("mednf.cli.views", "classify", "k-NN (k = 1, 3) and the paper's MLP on NAME's latents, "
                            "beside the same on raw pixels (Table 4)."),
    "decode": LazyCommand("mednf.cli.views", "decode", "Decode latents of NAME to images: a PNG grid (inputs beside "
                          "reconstructions when the source images are available) or the raw array as .npy."),
    "demo": LazyCommand("mednf.cli.build", "demo", "Meta-learn and fit on generated phantoms (CPU, no download, "
                        "~1 minute)."),
    "download": LazyCommand("mednf.cli.publish", "download", "Download a published MedNF dataset into the cache, "
                            "verified (sha256, md5, manifest)."),
    "encode": LazyCommand("mednf.cli.views", "encode", "Fit latents for the images of an .npz into NAME's space (its "
                          "θ and fit settings)."),
    "eval": LazyCommand("mednf.cli.views", "eval_", "MSE, PSNR and SSIM of NAME's decoded latents against the source "
                        "images, per split and per sample."),
    "export": LazyCommand("mednf.cli.publish", "export", "Write a publishable copy of a built dataset: zenodo (one "
                          "archive + SHA256SUMS + registry entry) or hf (Parquet shards + card with data_files, "
                          "loadable by datasets.load_dataset, + manifest and θ)."),
    "import-official": LazyCommand("mednf.cli.publish", "import_official", "Convert the official MedNF release "
                                   "layout (model.pt, {train,val,test}/datapoint_{i}.pt) into mednf's format, reading "
                                   "it weights-only (no arbitrary unpickling)."),
    "info": LazyCommand("mednf.cli.info", "info", "Summary of a built dataset: counts, latent size, hyper-parameters, "
                        "PSNR/SSIM, licence."),
    "inpaint": LazyCommand("mednf.cli.views", "inpaint", "Fill the unobserved pixels of IMAGES: fit each to its "
                           "observed pixels in NAME's space, decode it whole (a --size above the space's resolution "
                           "gives super-resolution)."),
    "list": LazyCommand("mednf.cli.catalogue", "list_builders", "List the builders (modality, size, channels, task, "
                        "split counts) and where each stands here: built (where, test PSNR), downloadable (a "
                        "registered published copy) or buildable only."),
    "presets": LazyCommand("mednf.cli.catalogue", "presets", "List the engine presets (the paper's configurations "
                           "and mednf's CPU ones)."),
}


@click.group(cls=LazyGroup, lazy=COMMANDS)
@click.version_option(package_name="mednf")
def main() -> None:
    """mednf: medical datasets as neural fields (MedFuncta)."""
    logging.raiseExceptions = debug()  # a log write failing (full disk) must not print a traceback

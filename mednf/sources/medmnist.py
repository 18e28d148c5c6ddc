"""Raw data for a build: MedMNIST npz files (verified, downloaded when missing) and generated phantoms.

MedMNIST files are read with numpy, not through ``medmnist``'s classes: those assert the official
sample counts (so a user's own smaller file could not be read) and ``medmnist`` pulls torchvision. The
file name, URL and md5 of every size come from the builder file, a copy of ``medmnist.INFO`` that
``tests/test_builders.py`` compares against the installed medmnist.

Where a file is looked for: ``--medmnist-root`` / ``root=``, else ``$MEDMNIST_ROOT``, else medmnist's
default ``~/.medmnist``. A missing file is downloaded (``urllib``, timeout, progress bar) to a temporary
name beside the target, its md5 checked while streaming, then renamed: a half-downloaded or corrupt file
never sits under the real name; ``$MEDNF_OFFLINE=1`` forbids it (the error names the file and where it
goes). ``$MEDNF_MEDMNIST_URL`` replaces the URL template (mirrors, tests); it must hold exactly one
``{file}`` field (checked where it is read: a one-line ConfigError otherwise).

Images are returned channels first, ``[N, D, *spatial]``, as stored (uint8 0..255, or float in [0, 1]);
the engine converts each batch to float32.
"""

from __future__ import annotations

import hashlib
import os
import string
import zipfile
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mednf.errors import ConfigError, DownloadError, SourceError
from mednf.format.splits import SPLITS
from mednf.io.http import fetch_verified, shown
from mednf.sources.base import SplitData

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec

DEFAULT_MEDMNIST_ROOT = Path("~/.medmnist")  # medmnist.info.DEFAULT_ROOT
_CHUNK = 1 << 20


def medmnist_root(root: str | Path | None = None) -> Path:
    """The folder MedMNIST files are looked for in (argument, ``$MEDMNIST_ROOT``, ``~/.medmnist``)."""
    chosen = root or os.environ.get("MEDMNIST_ROOT") or DEFAULT_MEDMNIST_ROOT
    return Path(chosen).expanduser()


def file_md5(path: Path) -> str:
    """The md5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def source_url(spec: BuilderSpec) -> str:
    """The download URL of the spec's file (``$MEDNF_MEDMNIST_URL`` replaces the template); a template that
    is not a URL with exactly one ``{file}`` field is a one-line :class:`ConfigError` (:func:`check_template`)."""
    template = os.environ.get("MEDNF_MEDMNIST_URL")
    if template:
        check_template(template, "MEDNF_MEDMNIST_URL")  # the builder file's url is checked when it is loaded
    else:
        template = spec.source.url
    return template.format(file=spec.source.file_name)


def check_template(template: str, origin: str) -> None:
    """A URL template must hold exactly one field, ``{file}`` (no conversion, no format spec; a literal
    brace is written ``{{`` or ``}}``) and no space or control character; else a ConfigError naming
    ``origin`` (the variable or builder file it came from), its value (shortened) and the expected form."""
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as err:  # a lone "{" or "}"
        problem = f"it is not a valid template ({err})"
    else:
        problem = ""
        if fields != [("file", "", None)]:
            found = ", ".join("{" + shown(name, 20) + (f"!{conversion}" if conversion else "")
                              + (f":{shown(spec, 20)}" if spec else "") + "}" for name, spec, conversion in fields)
            problem = f"it has the field(s) {found}" if fields else "it has no {file} field"
        elif any(c.isspace() or not c.isprintable() for c in template):
            problem = "it contains a space or a control character (write a space as %20)"
    if problem:
        raise ConfigError(f"{origin} is {shown(template, 80)!r}: {problem}; expected a URL with exactly one "
                          "{file} field where the file name goes, e.g. https://mirror.example/medmnist/{file} "
                          "(a literal brace is written {{ or }})")


def download(url: str, target: Path, md5: str, *, progress: bool = True) -> None:
    """Fetch ``url`` to ``target`` with :func:`mednf.io.http.fetch_verified` (temporary name, Content-Length and
    md5 checked before the rename); a failure, or ``$MEDNF_OFFLINE`` set, is a :class:`SourceError` saying
    which file to fetch and where to put it."""
    if os.environ.get("MEDNF_OFFLINE", "") not in ("", "0"):
        raise SourceError(f"{target.name} is missing and MEDNF_OFFLINE is set; download {url} (md5 {md5}) and put "
                          f"it at {target}, point --medmnist-root / MEDMNIST_ROOT at a folder that has it, or unset "
                          "MEDNF_OFFLINE")
    try:
        fetch_verified(url, target, size=None, md5=md5, progress=progress)
    except DownloadError as err:
        raise SourceError(
            f"{target.name} is missing and could not be downloaded ({err}); download {url} yourself and put it at "
            f"{target}, or point --medmnist-root / MEDMNIST_ROOT at a folder that has it"
        ) from None


def expected_md5(spec: BuilderSpec) -> str:
    """The official md5 of the spec's size (SourceError naming the sizes that have one)."""
    md5 = spec.source.md5.get(str(spec.source.size))
    if md5 is None:
        raise SourceError(f"size = {spec.source.size} has no official file for {spec.name}: expected one of "
                          f"{sorted(int(s) for s in spec.source.md5)}; pick another --size")
    return md5


def locate_medmnist(spec: BuilderSpec, root: str | Path | None = None, *, download_missing: bool = True,
                    progress: bool = True) -> tuple[Path, str]:
    """Path of the verified official npz of ``spec`` (downloaded if missing) and its md5."""
    expected = expected_md5(spec)
    path = medmnist_root(root) / spec.source.file_name
    if not path.is_file():
        if not download_missing:
            raise SourceError(f"{path} is missing; download {source_url(spec)} to that path or allow downloads")
        if not source_url(spec):
            raise SourceError(f"{path} is missing and {spec.path or spec.name} [source] has no url to download it "
                              "from; put the file there, set MEDNF_MEDMNIST_URL, or pass --source-npz")
        download(source_url(spec), path, expected, progress=progress)
    actual = file_md5(path)
    if actual != expected:
        raise SourceError(
            f"{path} has md5 {actual}, expected {expected} (official {spec.source.file_name}); delete it to "
            "download it again, or pass your own file with --source-npz"
        )
    return path, actual


def read_npz(path: Path, spec: BuilderSpec) -> dict[str, SplitData]:
    """Read and validate the three splits of a MedMNIST-layout npz (``{split}_images``, ``{split}_labels``)."""
    src = spec.source
    spatial = (src.size,) * src.dims
    gray_shape = spatial if src.channels == 1 else (*spatial, src.channels)
    try:
        if not zipfile.is_zipfile(path):  # else numpy tries it as a pickle and advises allow_pickle
            raise ValueError("not a zip archive")
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:  # EOFError: an empty file
        raise SourceError(f"{path} is not a readable npz file ({str(err) or type(err).__name__}); replace it with a "
                          "MedMNIST .npz") from None
    splits = {}
    with archive:
        for split in SPLITS:
            keys = (f"{split}_images", f"{split}_labels")
            missing = [k for k in keys if k not in archive.files]
            if missing:
                raise SourceError(f"{path} lacks {missing}: expected keys {{train,val,test}}_{{images,labels}} "
                                  f"(found {sorted(archive.files)}); use a MedMNIST-layout npz")
            try:
                images, labels = archive[keys[0]], archive[keys[1]]
            except ValueError as err:  # object arrays need pickle: refused
                raise SourceError(f"{path}: {keys[0]} cannot be read without pickle ({err}); "
                                  "store plain numeric arrays") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise SourceError(f"{path}: {split} arrays are damaged ({err}); download or write the file "
                                  "again") from None
            if len(images) == 0:
                raise SourceError(f"{path}: {keys[0]} is empty; every split needs at least one image")
            if images.shape[1:] != gray_shape:
                expected = ", ".join(map(str, gray_shape))
                raise SourceError(f"{path}: {keys[0]} has shape {images.shape}, expected [N, {expected}] for "
                                  f"{spec.name} at size {src.size}; check --size and the file")
            _check_pixels(images, f"{path}: {keys[0]}")
            labels = labels.reshape(len(labels), -1) if labels.ndim == 1 else labels
            if labels.ndim != 2 or len(labels) != len(images):
                raise SourceError(f"{path}: {keys[1]} has shape {labels.shape}, expected ({len(images)}, L); "
                                  "one row of labels per image")
            if not np.issubdtype(labels.dtype, np.integer):
                raise SourceError(f"{path}: {keys[1]} has dtype {labels.dtype}: expected integer label ids; "
                                  "check the file belongs to this builder")  # values: sources.read.check_labels
            if src.channels == 3:
                images = np.moveaxis(images, -1, 1)  # [N, H, W, 3] → [N, 3, H, W] view
            else:
                images = images[:, None]
            splits[split] = SplitData(images, labels.astype(np.int64), np.arange(len(images), dtype=np.int64))
    return splits


def _check_pixels(images: np.ndarray, what: str) -> None:
    if images.dtype == np.uint8:
        return
    if not np.issubdtype(images.dtype, np.floating):
        raise SourceError(f"{what} has dtype {images.dtype}: expected uint8 (0..255) or float in [0, 1]; convert it")
    bad = ~np.isfinite(images)
    if bad.any():
        raise SourceError(f"{what} has {int(bad.sum())} NaN/inf pixels; clean or drop those images")
    lo, hi = float(images.min(initial=0.0)), float(images.max(initial=0.0))
    if lo < 0.0 or hi > 1.0:
        raise SourceError(f"{what} has float pixels in [{lo:g}, {hi:g}]: expected [0, 1]; rescale it")

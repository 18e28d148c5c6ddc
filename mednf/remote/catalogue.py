"""What ``mednf list`` says about each dataset: built (where, test PSNR), downloadable (which published
copies the registry has) or buildable only.

"Built" means a complete dataset in the cache (``root`` / ``$MEDNF_HOME``): its manifest is there and
parses; checksums are not hashed here (``mednf.load`` and ``mednf download`` do that), so listing stays
instant. A folder holding an unfinished build (``.partial/``) is reported as such.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mednf.errors import MednfError, match_name
from mednf.format.layout import MANIFEST, mednf_home, unfinished_build
from mednf.format.manifest import Manifest
from mednf.remote.registry import registry


@dataclass(frozen=True)
class Availability:
    """Where a dataset stands on this machine."""

    name: str
    path: Path | None = None  # the cache folder holding it (built, downloaded, unfinished or damaged)
    state: str = "buildable"  # "built" | "downloaded" | "imported" | "unfinished" | "damaged" | "buildable"
    test_psnr: float | None = None  # mean test PSNR recorded in the manifest (None: not measured)
    published: tuple[str, ...] = ()  # registered copies: "Zenodo", "Zenodo, the paper's release", "HF Hub"

    @property
    def complete(self) -> bool:
        """A finished copy is here (built, downloaded or imported)."""
        return self.state in ("built", "downloaded", "imported")

    def describe(self) -> str:
        """One line, e.g. ``built in ~/.cache/mednf/PhantomNF (test 27.31 dB)`` or
        ``downloadable (Zenodo): `mednf download X```."""
        if self.complete:
            psnr = f"test {self.test_psnr:.2f} dB" if self.test_psnr is not None else "test PSNR not measured"
            line = f"{self.state} in {self.path} ({psnr})"
        elif self.state == "unfinished":
            line = f"unfinished build in {self.path} (rerun `mednf build {self.name.lower()}` to resume)"
        elif self.state == "damaged":
            line = f"damaged copy in {self.path} (its manifest does not parse; rebuild or download it again)"
        else:
            line = ""
        if self.published and not self.complete:
            line += (("; " if line else "")
                     + f"downloadable ({' or '.join(self.published)}): `mednf download {self.name}`")
        return line or f"buildable only: `mednf build {self.name.lower()}`"


def published_copies(name: str) -> tuple[str, ...]:
    """The registered copies of ``name`` (case-insensitive): Zenodo and/or the HF Hub."""
    for key, entry in registry().items():
        if key.lower() == name.lower():
            copies = []
            if entry.get("zenodo_record"):
                copies.append("Zenodo, the paper's release" if entry.get("layout") == "official" else "Zenodo")
            if entry.get("hf_repo"):
                copies.append("HF Hub")
            return tuple(copies)
    return ()


def availability(name: str, root: str | Path | None = None) -> Availability:
    """Where ``name`` stands in the cache ``root`` (default ``$MEDNF_HOME``) and in the registry."""
    home = Path(root).expanduser() if root else mednf_home()
    folders = [p.name for p in home.iterdir() if p.is_dir()] if home.is_dir() else []
    found = match_name(name, folders, str(home))
    published = published_copies(name)
    if found is None:
        return Availability(name, published=published)
    path = home / found
    if not (path / MANIFEST).is_file():
        state = "unfinished" if unfinished_build(path) else "buildable"
        return Availability(name, path if state == "unfinished" else None, state, published=published)
    try:
        manifest = Manifest.read(path)
    except MednfError:
        return Availability(name, path, "damaged", published=published)
    origin = manifest.origin
    # a mednf export downloaded from Zenodo carries its builder's manifest: it reads as built
    state = ("built" if not origin else "imported" if origin.kind == "official-release"
             and origin.zenodo_record is None else "downloaded")
    test = manifest.splits.get("test")
    return Availability(manifest.name, path, state, test.psnr_mean if test else None, published)


def cached_names(root: str | Path | None = None) -> list[str]:
    """Names of the complete datasets in the cache (any builder, shipped or not)."""
    home = Path(root).expanduser() if root else mednf_home()
    if not home.is_dir():
        return []
    return sorted(p.name for p in home.iterdir() if (p / MANIFEST).is_file())

"""One verified HTTP transfer (streamed to a temporary name; size, sha256 and md5 checked before the
rename) and small JSON GETs. Library: urllib (stdlib), with timeouts.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError

TIMEOUT_S = 60


CHUNK = 1 << 20


def get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, json.JSONDecodeError) as err:
        raise DownloadError(f"could not read {url} ({getattr(err, 'reason', err)}); check the network "
                            "(or MEDNF_ZENODO_URL) and try again") from None


def fetch_verified(url: str, target: Path, *, size: int, sha256: str | None, md5: str | None = None,
                   progress: bool = True) -> None:
    """Stream ``url`` to ``target`` via a temporary file; size, sha256 and md5 (those given) must match first."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response, open(partial, "wb") as out, tqdm(
                total=size, unit="B", unit_scale=True, desc=f"download {target.name}", disable=not progress) as bar:
            while block := response.read(CHUNK):
                written += len(block)
                if written > size:
                    break  # longer than the registry says: reported below, never stored
                out.write(block)
                for digest in digests.values():
                    digest.update(block)
                bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed after {written} of {size} bytes "
                            f"({getattr(err, 'reason', err)}); nothing was kept, run again") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    problems = []
    if written != size:
        problems.append(f"size {'more than ' if written > size else ''}{written} bytes, expected {size}")
    elif sha256 is not None and digests["sha256"].hexdigest() != sha256:
        problems.append(f"sha256 {digests['sha256'].hexdigest()}, expected {sha256}")
    elif md5 is not None and digests["md5"].hexdigest() != md5:
        problems.append(f"md5 {digests['md5'].hexdigest()}, expected {md5} (Zenodo)")
    if problems:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{target.name} from {url} has {problems[0]}; it was discarded, run again")
    os.replace(partial, target)

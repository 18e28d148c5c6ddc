"""``mednf export --format hf --push ORG/NAME``: upload an HF export folder to a Hub dataset repository.

Library: ``huggingface_hub`` (its ``HfApi.create_repo`` and ``HfApi.upload_folder``): the Hub's own client
knows its upload protocol (LFS, chunked commits, retries), which mednf should not write again. The token is
the one huggingface_hub finds (``$HF_TOKEN``, or ``hf auth login``); without one nothing is attempted.

The repository then mirrors the folder: files of an earlier upload that the folder no longer has are deleted
in the same commit. The registry entry beside the folder is completed with the repository and that commit,
so a later ``mednf download NAME --source hf`` reads exactly what was uploaded.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mednf.errors import PublishError
from mednf.format.manifest import Manifest
from mednf.optional import optional_import
from mednf.tasks.export import write_hf_registry_entry

REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def push_hf(folder: Path, repo: str, *, api: Any = None) -> str:
    """Upload the HF export ``folder`` to the dataset repository ``repo`` (created if absent) and complete its
    registry entry; returns the commit. ``api``: an ``HfApi`` (default: one for the Hub ``huggingface_hub``
    is configured for)."""
    if not REPO_NAME.fullmatch(repo) or ".." in repo:
        raise PublishError(f"--push {repo[:100]!r} is not a Hub repository name: expected ORG/NAME, e.g. "
                           f"--push my-lab/{Manifest.read(folder).name}")
    hub = optional_import("huggingface_hub", "--push")
    token = hub.get_token()
    if token is None:
        raise PublishError(f"no Hugging Face token found, so nothing was uploaded to {repo}: run `hf auth login` "
                           "or set $HF_TOKEN, then export again with --push")
    api = api or hub.HfApi()
    name = Manifest.read(folder).name
    try:
        api.create_repo(repo, repo_type="dataset", exist_ok=True, token=token)
        info = api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="dataset", token=token,
                                 commit_message=f"{name}: mednf export", delete_patterns="*")
    except Exception as err:  # noqa: BLE001 (HTTP, network and Hub errors each have their own types)
        reason = (str(err).splitlines() or [type(err).__name__])[0][:200]
        raise PublishError(f"the upload of {folder} to {repo} failed ({reason}); check the token's write access "
                           "and the network, then export again with --push (the folder is kept)") from None
    commit = str(info.oid)
    write_hf_registry_entry(folder, repo, commit)
    return commit

"""``mednf export --format hf --push ORG/NAME``: upload an HF export folder to a Hub dataset repository.

Library: ``huggingface_hub`` (its ``HfApi.create_repo`` and ``HfApi.upload_folder``): the Hub's own client
knows its upload protocol (LFS, chunked commits, retries), which mednf should not write again. The token is
the one huggingface_hub finds (``$HF_TOKEN``, or ``hf auth login``); without one nothing is attempted.

The Hub is the one :func:`mednf.remote.fetch.hf_endpoint` names (``$MEDNF_HF_ENDPOINT``, else ``$HF_ENDPOINT``,
else https://huggingface.co), refused unless ``https://`` (plain ``http://`` only to a loopback host, as
:func:`mednf.io.http.check_url`). mednf cannot bound each read of huggingface_hub's client, so the whole
upload runs under one total deadline: ``$MEDNF_HTTP_DEADLINE`` if set, else :func:`mednf.io.http.deadline` of
the folder's size; past it the command ends with one line (the upload is left to die with the process).

The repository then mirrors the folder: files of an earlier upload that the folder no longer has are deleted
in the same commit. The registry entry beside the folder is completed with the repository and that commit,
so a later ``mednf download NAME --source hf`` reads exactly what was uploaded.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mednf.errors import PublishError
from mednf.format.manifest import Manifest
from mednf.io import http
from mednf.optional import optional_import
from mednf.remote.fetch import check_hf_endpoint, hf_endpoint
from mednf.tasks.export import write_hf_registry_entry

T = TypeVar("T")
REPO_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}/[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


def within(work: Callable[[], T], seconds: float) -> T:
    """``work()``'s result, or its exception, if it ends within ``seconds``; else TimeoutError. ``work`` runs in a
    daemon thread, which is left running past the limit (it cannot be stopped from outside; it ends with the
    process)."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = work()
        except BaseException as err:  # noqa: BLE001 (handed to the caller's thread as it is)
            outcome["error"] = err

    worker = threading.Thread(target=run, name="mednf-upload", daemon=True)
    worker.start()
    worker.join(seconds)
    if worker.is_alive():
        raise TimeoutError(f"not finished after {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


def push_hf(folder: Path, repo: str, *, api: Any = None) -> str:
    """Upload the HF export ``folder`` to the dataset repository ``repo`` (created if absent) and complete its
    registry entry; returns the commit. ``api``: an ``HfApi`` (default: one for :func:`hf_endpoint`). The
    endpoint is checked first and the upload bounded by a total deadline (see the module docstring)."""
    if not REPO_NAME.fullmatch(repo) or ".." in repo:
        raise PublishError(f"--push {repo[:100]!r} is not a Hub repository name: expected ORG/NAME, e.g. "
                           f"--push my-lab/{Manifest.read(folder).name}")
    hub = optional_import("huggingface_hub", "--push")
    endpoint = getattr(api, "endpoint", None) if api is not None else None
    check_hf_endpoint(str(endpoint or hf_endpoint()), "--push")
    limit = http.deadline(sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()))
    token = hub.get_token()
    if token is None:
        raise PublishError(f"no Hugging Face token found, so nothing was uploaded to {repo}: run `hf auth login` "
                           "or set $HF_TOKEN, then export again with --push")
    api = api or hub.HfApi(endpoint=hf_endpoint())
    name = Manifest.read(folder).name

    def upload() -> Any:
        api.create_repo(repo, repo_type="dataset", exist_ok=True, token=token)
        return api.upload_folder(repo_id=repo, folder_path=str(folder), repo_type="dataset", token=token,
                                 commit_message=f"{name}: mednf export", delete_patterns="*")

    try:
        info = within(upload, limit)
    except TimeoutError:
        raise PublishError(f"the upload of {folder} to {repo} did not finish within {limit:g} s; the Hub is slow or "
                           "unreachable: try again later, or raise MEDNF_HTTP_DEADLINE (seconds a transfer may take "
                           "in all), then export again with --push (the folder is kept)") from None
    except Exception as err:  # noqa: BLE001 (HTTP, network and Hub errors each have their own types)
        reason = http.shown((str(err).splitlines() or [type(err).__name__])[0], 200)
        raise PublishError(f"the upload of {folder} to {repo} failed ({reason}); check the token's write access "
                           "and the network, then export again with --push (the folder is kept)") from None
    commit = str(info.oid)
    write_hf_registry_entry(folder, repo, commit)
    return commit

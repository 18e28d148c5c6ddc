"""``mednf export --format hf --push ORG/NAME``. The Hub itself cannot be reached from the tests: the upload is
checked by its calls (an object standing in for ``huggingface_hub.HfApi`` records them), the refusal without a
token and of a bad repository name for real. Not tested here: that the Hub accepts the upload."""

from __future__ import annotations

import tomllib
from types import SimpleNamespace

import pytest
from click.testing import CliRunner

from mednf.cli import main
from mednf.errors import PublishError
from mednf.tasks.export import export_hf, hf_registry_entry
from mednf.tasks.push import push_hf


class RecordingApi:
    """Records the calls :func:`push_hf` makes; ``upload_folder`` answers with a commit id as the Hub does."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, tuple, dict]] = []
        self.fail = fail

    def create_repo(self, *args, **kwargs):
        self.calls.append(("create_repo", args, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", (), kwargs))
        if self.fail is not None:
            raise self.fail
        return SimpleNamespace(oid="0123456789abcdef0123456789abcdef01234567")


@pytest.fixture
def exported(phantom_dir, tmp_path):
    return export_hf(phantom_dir, tmp_path / "hf")


def test_push_uploads_the_folder_as_a_dataset_and_pins_the_commit(exported, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    api = RecordingApi()
    commit = push_hf(exported, "my-lab/PhantomNF", api=api)
    assert commit == "0123456789abcdef0123456789abcdef01234567"
    (name, args, create), (_, _, upload) = api.calls
    assert name == "create_repo" and args == ("my-lab/PhantomNF",)
    assert create == {"repo_type": "dataset", "exist_ok": True, "token": "hf_test_token"}
    assert upload["repo_id"] == "my-lab/PhantomNF" and upload["repo_type"] == "dataset"
    assert upload["folder_path"] == str(exported) and upload["delete_patterns"] == "*"
    entry = tomllib.loads(hf_registry_entry(exported).read_text())["PhantomNF"]
    assert entry["hf_repo"] == "my-lab/PhantomNF" and entry["hf_revision"] == commit


def test_push_without_a_token_uploads_nothing(exported, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)  # HF_HOME is the tests' sandbox: no stored token either
    api = RecordingApi()
    with pytest.raises(PublishError, match="no Hugging Face token found"):
        push_hf(exported, "my-lab/PhantomNF", api=api)
    assert api.calls == []
    assert "<commit after upload>" in hf_registry_entry(exported).read_text()


@pytest.mark.parametrize("repo", ["PhantomNF", "a/b/c", "../x", "org/..", "org/na me", "-org/x"])
def test_a_bad_repository_name_is_refused_before_anything(exported, monkeypatch, repo):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    api = RecordingApi()
    with pytest.raises(PublishError, match="is not a Hub repository name"):
        push_hf(exported, repo, api=api)
    assert api.calls == []


def test_a_failed_upload_is_one_line_and_keeps_the_placeholders(exported, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with pytest.raises(PublishError, match=r"failed \(403 Forbidden\); check the token") as err:
        push_hf(exported, "my-lab/PhantomNF", api=RecordingApi(fail=OSError("403 Forbidden\nbody")))
    assert "\n" not in str(err.value)
    assert "<commit after upload>" in hf_registry_entry(exported).read_text()


def test_the_cli_refuses_push_without_a_token_and_push_with_zenodo(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    out = tmp_path / "hf"
    result = CliRunner().invoke(main, ["export", str(phantom_dir), "--format", "hf", "--out", str(out),
                                       "--push", "my-lab/PhantomNF"])
    assert result.exit_code == 1 and "no Hugging Face token found" in result.output
    assert (out / "mednf.json").is_file()  # the export itself is kept
    result = CliRunner().invoke(main, ["export", str(phantom_dir), "--format", "zenodo", "--out",
                                       str(tmp_path / "z"), "--push", "my-lab/PhantomNF"])
    assert result.exit_code == 2 and "add --format hf" in result.output

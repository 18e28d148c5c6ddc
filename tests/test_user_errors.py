"""User mistakes and environment faults at the command line: one ``error:`` line, exit status 2, no
traceback, nothing left that looks complete. Real files and real ``mednf`` subprocesses: an empty and a
damaged npz, outputs in missing folders, a full tmpfs, a process memory limit."""

from __future__ import annotations

import errno
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mednf.cli import main
from mednf.errors import SourceError
from mednf.sources.read import load_source
from mednf.sources.spec import load_builder

MEDNF = [sys.executable, "-m", "mednf.cli"]


def run(*args: str, env: dict[str, str] | None = None, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*MEDNF, *args], capture_output=True, text=True, timeout=300, check=False,
                          env={**os.environ, **(env or {})}, **kwargs)


def error_line(code: int, output: str, status: int = 2) -> str:
    """The one ``error:`` line of a failed command (exit ``status``: 2 for a wrong command line, 1 for a failure;
    no traceback, no click "Aborted!")."""
    assert code == status, (code, output)
    assert "Traceback" not in output and "Aborted!" not in output, output
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, output
    return lines[0]


def failed(*args: str, status: int = 2, **kwargs) -> str:
    result = run(*args, **kwargs)
    return error_line(result.returncode, result.stdout + result.stderr, status)


def cli(*args: str, status: int = 2) -> str:
    result = CliRunner().invoke(main, list(args))
    return error_line(result.exit_code, result.output, status)


def phantom_builder(tmp_path: Path, old: str, new: str) -> Path:
    """PhantomNF's builder file with one edit and small splits."""
    from importlib import resources

    text = resources.files("mednf.builders").joinpath("phantomnf.toml").read_text()
    assert text.count(old) == 1
    text = text.replace(old, new).replace("train = 600", "train = 8").replace("val = 100", "val = 4")
    path = tmp_path / "mine.toml"
    path.write_text(text.replace("test = 200", "test = 4"))
    return path


def images_npz(path: Path, count: int = 2, size: int = 32, compressed: bool = False) -> Path:
    images = np.random.default_rng(0).integers(0, 256, (count, size, size), dtype=np.uint8)
    (np.savez_compressed if compressed else np.savez)(path, images=images)
    return path


# ------------------------------------------------------------------ labels


def test_label_names_must_cover_the_labels_found(tmp_path):
    names = 'names = ["0 lesions", "1 lesion", "2 lesions", "3 lesions"]'
    path = phantom_builder(tmp_path, names, 'names = ["none", "some"]')
    with pytest.raises(SourceError) as err:
        load_source(load_builder(str(path)), progress=False)
    message = str(err.value)
    assert "values [0, 1, 2, 3]" in message and "outside the 2 label names" in message and "\n" not in message
    line = cli("build", str(path), "--out", str(tmp_path / "out"), "--preset", "tiny", "--quiet", status=1)
    assert "values [0, 1, 2, 3]" in line and not (tmp_path / "out" / "mednf.json").exists()
    multi = phantom_builder(tmp_path, 'task = "multi-class"', 'task = "multi-label"')
    with pytest.raises(SourceError, match=r"labels have shape \(8, 1\), expected \(8, 4\)"):
        load_source(load_builder(str(multi)), progress=False)


# ------------------------------------------------------------------ bad options


def test_a_bool_is_not_a_number_on_the_command_line(tmp_path):
    line = cli("build", "phantomnf", "--out", str(tmp_path / "out"), "--set", "meta.inner_lr=true")
    assert "inner_lr (α) = True is invalid" in line
    line = cli("build", "phantomnf", "--out", str(tmp_path / "out"), "--set", "meta.inner_lrr=0.1")
    assert "did you mean 'inner_lr'" in line


def test_phantoms_take_no_source_npz(tmp_path):
    npz = images_npz(tmp_path / "x.npz")
    line = cli("build", "phantomnf", "--out", str(tmp_path / "out"), "--source-npz", str(npz), "--preset", "tiny",
               "--size", "16", "--max-samples", "4", "--steps", "2", "--quiet")
    assert "--source-npz" in line and "generated from the seed" in line
    assert not (tmp_path / "out" / "mednf.json").exists()


# ------------------------------------------------------------------ files


def test_empty_npz_is_one_line_not_aborted(tmp_path, phantom_dir):
    empty = tmp_path / "empty.npz"
    empty.write_bytes(b"")
    out = tmp_path / "out"
    line = failed("build", "breastnf", "--source-npz", str(empty), "--out", str(out), "--preset", "tiny", "--quiet",
                  status=1)
    assert str(empty) in line and "not a readable npz" in line and not (out / "mednf.json").exists()
    line = failed("encode", str(phantom_dir), str(empty), "--out", str(tmp_path / "z.npz"), status=1)
    assert str(empty) in line and not (tmp_path / "z.npz").exists()


def test_encode_damaged_npz_and_missing_out_folder(tmp_path, phantom_dir):
    body = bytearray(images_npz(tmp_path / "good.npz", compressed=True).read_bytes())
    body[120:320] = b"\xff" * 200  # inside the compressed member: the zip directory still reads
    damaged = tmp_path / "damaged.npz"
    damaged.write_bytes(bytes(body))
    line = cli("encode", str(phantom_dir), str(damaged), "--out", str(tmp_path / "z.npz"), status=1)
    assert str(damaged) in line and "not a readable .npz" in line and not (tmp_path / "z.npz").exists()
    line = cli("encode", str(phantom_dir), str(tmp_path / "good.npz"), "--out", str(tmp_path / "nowhere" / "z.npz"))
    assert f"its folder {tmp_path / 'nowhere'} does not exist" in line


def test_decode_checks_its_output_before_decoding(tmp_path, phantom_dir):
    line = cli("decode", str(phantom_dir), "--out", str(tmp_path / "nowhere" / "grid.png"))
    assert f"its folder {tmp_path / 'nowhere'} does not exist" in line
    (tmp_path / "x.npy").mkdir()
    assert "it is a folder" in cli("decode", str(phantom_dir), "--out", str(tmp_path / "x.npy"))
    line = cli("decode", str(phantom_dir), "--size", "100000", "--indices", "0:2", "--out", str(tmp_path / "g.png"))
    assert "100000" in line and not (tmp_path / "g.png").exists()


# ------------------------------------------------------------------ the guard: OSError, MemoryError, full disk


def test_os_error_is_one_line_and_mednf_debug_shows_the_traceback(tmp_path, phantom_dir):
    too_long = tmp_path / ("x" * 300 + ".npy")  # no check knows this: the OSError reaches the guard
    line = failed("decode", str(phantom_dir), "--out", str(too_long), status=1)
    assert line.startswith("error: mednf decode failed on ") and str(too_long) in line
    assert "File name too long [ENAMETOOLONG]" in line and "use a shorter one" in line
    result = run("decode", str(phantom_dir), "--out", str(too_long), env={"MEDNF_DEBUG": "1"})
    assert result.returncode != 0 and "Traceback" in result.stderr and "OSError" in result.stderr
    blocker = tmp_path / "report"
    blocker.write_text("a file where eval would write its report folder")
    assert "it is a file, expected a folder" in cli("eval", str(phantom_dir), "--out", str(blocker))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="RLIMIT_AS memory limit: Linux only")
def test_out_of_memory_is_one_line(tmp_path, phantom_dir):
    import resource

    def limit() -> None:  # 4 GiB of address space: torch loads, a 4 GiB decode does not fit
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    line = failed("decode", str(phantom_dir), "--size", "16384", "--indices", "0:4", "--out", str(tmp_path / "x.npy"),
                  preexec_fn=limit, status=1)
    assert "ran out of memory" in line or "available" in line, line  # the allocation, or decode's own check
    assert not (tmp_path / "x.npy").exists()


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MiB tmpfs (needs root), unmounted afterwards."""
    folder = tmp_path / "disk"
    folder.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True,
                             text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip() or mounted.returncode}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_full_disk_is_one_line_that_says_how_to_resume(small_disk):
    out = small_disk / "PhantomNF"
    # θ alone (a 64 × 16384 modulation matrix, 4 MiB) does not fit: the first checkpoint fills the disk
    line = failed("build", "phantomnf", "--out", str(out), "--preset", "tiny", "--size", "32", "--max-samples", "8",
                  "--steps", "2", "--latent-dim", "16384", "--quiet", "--set", "build.block_rows=8",
                  "--set", "build.val_every=1", "--set", "build.val_samples=4", status=1)
    assert "no space left" in line and str(out) in line and "rerun the same command" in line and "resumes" in line
    assert "MiB free" in line and not (out / "mednf.json").exists()


def test_full_disk_under_a_report_names_the_report_file(small_disk, phantom_dir):
    filler = small_disk / "filler"
    with open(filler, "wb") as fh, pytest.raises(OSError):
        while True:
            fh.write(b"\0" * 65536)
            fh.flush()
    report = small_disk / "c.json"
    line = cli("classify", str(phantom_dir), "--model", "knn", "--features", "latents", "--out", str(report), status=1)
    assert f"no space left on the device of {report}" in line and "write elsewhere" in line
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler"]  # no temporary file left behind


def test_a_failed_write_names_the_file_it_was_writing(tmp_path):
    """A write error carries no file name of its own (here the file-size limit, EFBIG): the file is named."""
    script = ("import resource, signal, sys; from pathlib import Path; from mednf.io.files import atomic_write_bytes\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN); resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))\n"
              "try:\n    atomic_write_bytes(Path(sys.argv[1]), b'x' * 4096)\n"
              "except OSError as err:\n    print(err.filename, err.errno)\n")
    target = tmp_path / "out.bin"
    result = subprocess.run([sys.executable, "-c", script, str(target)], capture_output=True, text=True, check=True)
    assert result.stdout.split() == [str(target), str(errno.EFBIG)]
    assert list(tmp_path.iterdir()) == []


def test_npy_output_is_written_whole(tmp_path, phantom_dir):
    out = tmp_path / "x.npy"
    result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--indices", "0:3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert np.load(io.BytesIO(out.read_bytes())).shape == (3, 1, 32, 32)
    assert [p.name for p in tmp_path.iterdir()] == ["x.npy"]  # no temporary file left beside it

"""Render a dataset card (``README.md``) from ``cards/dataset_card.md`` and a build's manifest.

The YAML front matter comes from ``huggingface_hub.DatasetCardData`` (the Hub's own schema, so the card
is valid on the Hub as it is); the body is a ``string.Template`` filled with measured numbers.
"""

from __future__ import annotations

from pathlib import Path
from string import Template
from typing import Any

from mednf.engine.presets import recipe_note, shorter_than_paper
from mednf.format.manifest import Manifest
from mednf.shipped import shipped_folder

_LICENSE_IDS = {"CC BY 4.0": "cc-by-4.0", "CC BY-NC 4.0": "cc-by-nc-4.0", "CC0 1.0": "cc0-1.0"}

_MEDMNIST_BIBTEX = """@article{yang2023medmnist,
  title   = {MedMNIST v2 - A large-scale lightweight benchmark for 2D and 3D biomedical image classification},
  author  = {Yang, Jiancheng and Shi, Rui and Wei, Donglai and Liu, Zequan and Zhao, Lin and Ke, Bilian and Pfister, Hanspeter and Ni, Bingbing},
  journal = {Scientific Data},
  volume  = {10},
  number  = {1},
  pages   = {41},
  year    = {2023}
}
"""  # noqa: E501 (BibTeX data: the author list is one field on one line)


def _size_category(n: int) -> str:
    for limit, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return label
    return "1M<n<10M"


def front_matter(manifest: Manifest, configs: list[dict[str, Any]] | None = None) -> str:
    """The card's YAML front matter (without the ``---`` fences): license, name, task, tags, size category
    and the Hub's ``configs`` when given."""
    from huggingface_hub import DatasetCardData

    license_name = manifest.license
    total = manifest.total
    extra: dict[str, Any] = {"configs": configs} if configs else {}  # DatasetCardData keeps unknown keys as YAML
    data = DatasetCardData(
        license=_LICENSE_IDS.get(license_name, "other"),
        pretty_name=manifest.name,
        task_categories=["image-classification"],
        tags=["medical", "neural-fields", "medfuncta", "mednf", "implicit-neural-representations"],
        size_categories=[_size_category(total)],
        **extra,
    )
    return data.to_yaml().strip()


def _schedule_note(manifest: Manifest, steps: int) -> str:
    """"; note: …" when a paper preset was meta-trained for fewer iterations than the paper, or θ was learned
    with one of mednf's recipes (what it changes against the paper, and what that was measured to give); built
    here only."""
    preset = (manifest.builder or {}).get("preset")
    if manifest.meta_training.by is not None or not isinstance(preset, str):
        return ""
    recipe = manifest.meta_training.recipe
    note = recipe_note(recipe) if recipe else shorter_than_paper(preset, steps)
    return f"; note: {note}" if note else ""


def render_card(manifest: Manifest, source_line: str, configs: list[dict[str, Any]] | None = None,
                root: Path | None = None) -> str:
    """The Markdown card of a built dataset (all numbers read from ``manifest``); ``source_line`` says in one
    line where the data came from (its source kind's ``card_line``, which the format does not know); ``configs``
    are the Hub's ``data_files`` entries of an HF export. With ``root`` (the folder the card goes into), the
    curves and the reconstruction grid are shown only where their files are there (a copy rebuilt from an HF
    export of an older mednf has none)."""
    template = Template(shipped_folder("cards").joinpath("dataset_card.md").read_text(encoding="utf-8"))
    field, meta, fit = (manifest.engine[k] for k in ("field", "meta", "fit"))
    training, labels = manifest.meta_training, manifest.labels
    summary, citation = _summary(manifest)
    figures = _figures(manifest, root)
    return template.substitute(
        front_matter=front_matter(manifest, configs),
        name=manifest.name,
        summary=summary,
        latent_dim=field["latent_dim"],
        num_layers=field["num_layers"],
        hidden_dim=field["hidden_dim"],
        split_rows=_split_rows(manifest),
        fit_steps=fit["steps"],
        fit_lr=fit["lr"],
        grad_rescale="yes" if fit["grad_rescale"] else "no",
        label_column="`labels` (0/1 per finding)" if manifest.multi_label else "`label`",
        source_line=source_line + _source_notes(manifest),
        task=labels.task,
        label_names=", ".join(labels.names[:16]) + (" …" if len(labels.names) > 16 else ""),
        omega_first=f"{field['omega_first']:g}",
        omega_last=f"{(field['omega_last'] or field['omega_first']):g}",
        shift_mode=field["shift_mode"],
        meta_steps=meta["steps"],
        schedule_note=_schedule_note(manifest, meta["steps"]),
        best_step=training.best_step if training.best_step is not None
        else "— (trained by the MedFuncta authors; settings shown are mednf's preset, assumed)",
        inner_steps=meta["inner_steps"],
        inner_lr=meta["inner_lr"],
        context_ratio=meta["context_ratio"],
        meta_lr=meta["meta_lr"],
        batch_size=meta["batch_size"],
        lr_schedule=meta["lr_schedule"],
        mednf_version=manifest.software["mednf"],
        torch_version=manifest.software["torch"],
        device=manifest.device,
        world_size=manifest.world_size,
        license_text=_license_text(manifest),
        source_citation=citation,
        learning_warning=_learning_warning(manifest),
        **figures,
    )


def _split_rows(manifest: Manifest) -> str:
    """The table rows of the splits: count, PSNR, SSIM and the two baselines."""
    return "\n".join(
        f"| {split} | {s.count} | "
        + (f"{s.psnr_mean:.2f} ± {s.psnr_std:.2f} | " if s.psnr_mean is not None else "not measured | ")
        + (f"{s.ssim_mean:.4f} |" if s.ssim_mean is not None else "— |")
        + "".join(f" {(s.baselines or {})[k]:.2f} |" if k in (s.baselines or {}) else " — |"
                  for k in ("mean_image_psnr", "zero_latent_psnr"))
        for split, s in manifest.splits.items()
    )


def _learning_warning(manifest: Manifest) -> str:
    """A warning paragraph when the build's baseline check found that the latents barely learn (else empty)."""
    training = manifest.meta_training
    check = training.baseline_check or {}
    if check.get("learns_per_sample") is not False:
        return ""
    return (f"\n> **Warning:** the best validation PSNR ({training.best_val_psnr:.2f} dB) is not "
            f"{check['margin_db']:g} dB above the mean-image baseline of the validation subset "
            f"({check['val_mean_image_psnr']:.2f} dB): these latents carry little per-sample information. "
            + (f"The inner loop diverged ({check.get('evidence', 'see build.log')}): rebuild with a smaller "
               "inner learning rate.\n" if check.get("cause") == "diverging" else
               "Rebuild with a larger inner learning rate, more steps or a larger preset.\n"))


def _summary(manifest: Manifest) -> tuple[str, str]:
    """The card's first sentence and the source's BibTeX (MedMNIST's, else none)."""
    builder = manifest.builder
    src = builder["source"]
    if manifest.source["kind"] == "medmnist":
        return (f"**{manifest.name}** is {builder['description']} ({builder['modality']}), from MedMNIST+ "
                f"`{src['flag']}` at {src['size']}×{src['size']}, re-encoded as neural fields."), _MEDMNIST_BIBTEX
    return f"**{manifest.name}** is {builder['description']}, re-encoded as neural fields.", ""


def _source_notes(manifest: Manifest) -> str:
    """What the source line adds: an import of the official release, a build on the first samples only."""
    notes = ""
    origin = manifest.origin
    if origin is not None and origin.kind == "official-release":
        dropped = sum(len(v) for v in (origin.missing or {}).values())
        notes += (f"; latents and θ from the official MedNF release ({origin.doi}), imported by mednf "
                  f"({dropped} source samples have no latent: the official fit dropped incomplete batches)")
    if "max_samples" in manifest.source:
        notes += f", first {manifest.source['max_samples']} samples of each split only"
    return notes


def _license_text(manifest: Manifest) -> str:
    """The licence sentence: the source's licence (MedMNIST's inherited), non-commercial said plainly."""
    license_name = manifest.builder["source"]["license"] or "see the source dataset"
    text = (f"{license_name}, inherited from the source data. " if manifest.source["kind"] == "medmnist"
            else f"{license_name}. ")
    return text + ("Non-commercial use only. " if "NC" in license_name else "")


def _figures(manifest: Manifest, root: Path | None) -> dict[str, str]:
    """The card's figure lines: training curves and the reconstruction grid, when written (and present in
    ``root``)."""
    curves = manifest.meta_training.curves or {}  # written by mednf build (not by an import)
    if curves and root is not None and not all((root / curves[k]).is_file() for k in ("csv", "png")):
        curves = {}
    preview = manifest.fit.preview if manifest.fit is not None else None  # written by mednf build only
    if preview and root is not None and not (root / preview["png"]).is_file():
        preview = None
    training_files = (f"- `{curves['csv']}` — one row per meta-iteration (loss, PSNR, gradient norm, learning rate, "
                      f"seconds) and per validation (PSNR, SSIM); `{curves['png']}` — its curves\n") if curves else ""
    preview_file = (f"- `{preview['png']}` — the first {preview['samples']} {preview['split']} samples: input, "
                    "reconstruction, |error|\n") if preview else ""
    return {
        "training_files": training_files + preview_file,
        "training_plot": ("\n![training curves: meta-loss and PSNR per iteration, validation points, best marked]"
                          f"({curves['png']})\n") if curves else "",
        "preview_plot": (f"\n![the first {preview['samples']} {preview['split']} samples: input, reconstruction and "
                         f"|error|]({preview['png']})\n") if preview else "",
    }

"""``mednf info``: what a built dataset holds and how well its latents reconstruct."""

from __future__ import annotations

from pathlib import Path

import click

from mednf.cli.errors import GuardedCommand
from mednf.cli.options import root_option
from mednf.cli.output import Printer, printing_options
from mednf.lookup import info as dataset_info


def baselines_text(baselines: dict[str, float] | None) -> str:
    """``  baselines: mean image 15.2 dB, φ = 0 14.9 dB`` (empty when not recorded)."""
    if not baselines:
        return ""
    parts = [f"{label} {baselines[key]:.2f} dB" for key, label in (("mean_image_psnr", "mean image"),
                                                                    ("zero_latent_psnr", "φ = 0")) if key in baselines]
    return "  baselines: " + ", ".join(parts)


@click.command(cls=GuardedCommand)
@click.argument("name")
@root_option()
@printing_options
def info(name: str, root: Path | None, printer: Printer) -> None:
    """Summarise a built dataset (sizes, PSNR, licence).

    Counts, image and latent size, hyper-parameters, PSNR/SSIM per split and the licence."""
    summary = dataset_info(name, root)
    printer.result(summary)
    f, m = summary["engine"]["field"], summary["engine"]["meta"]
    printer.line(f"{summary['name']}  ({summary['path']}, {summary['size_bytes'] / 2**20:.1f} MiB)")
    printer.line(f"  latent P={summary['latent_dim']}  network K={f['num_layers']} L={f['hidden_dim']} "
                 f"ω {f['omega_first']:g}→{(f['omega_last'] or f['omega_first']):g}  "
                 f"meta {m['steps']} it, B={m['batch_size']}")
    image = summary["image"]
    shape = "×".join([str(image["size"])] * image["dims"])
    printer.line(f"  {('signals' if image['dims'] == 1 else 'images' if image['dims'] == 2 else 'volumes')} {shape}, "
                 f"{image['channels']} channel{'s' if image['channels'] != 1 else ''}; "
                 f"labels: {summary['labels']['task']}, {len(summary['labels']['names'])} classes; "
                 f"licence: {summary['license'] or 'not stated (set [source] license in the builder file)'}")
    for split, s in summary["splits"].items():
        ssim = f"{s['ssim_mean']:.3f}" if s["ssim_mean"] is not None else "—"
        psnr = f"{s['psnr_mean']:.2f} ± {s['psnr_std']:.2f} dB" if s["psnr_mean"] is not None else "not measured"
        printer.line(f"  {split:5s} {s['count']:7d} samples  PSNR {psnr}  SSIM {ssim}"
                     + baselines_text(s.get("baselines")))
    check = summary["meta_training"].get("baseline_check") or {}
    if check.get("learns_per_sample") is False:
        printer.line(f"  warning: the best validation PSNR is not {check['margin_db']:g} dB above the mean-image "
                     f"baseline ({check['val_mean_image_psnr']:.2f} dB): the latents carry little per-sample "
                     "information"
                     + ("; the inner loop diverged (rebuild with a smaller inner learning rate)"
                        if check.get("cause") == "diverging" else ""))

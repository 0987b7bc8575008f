"""The pictures the app writes for people: the PET in colour over the fused image (with a colour bar in the PET's
unit, SUVbw when it is known) and the tri-planar preview, in radiological convention with orientation labels."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

# The overlay is clear below this share of the display window and reaches full opacity at OPAQUE_FROM, so that
# the anatomy shows through where the PET is low.
CLEAR_BELOW, OPAQUE_FROM, MAX_OPACITY = 0.15, 0.5, 0.6
COLOUR_MAP = "hot"


@dataclass(frozen=True)
class PetWindow:
    """The PET's display range, ``0`` to ``upper`` in ``unit`` (the 99.5th percentile of the PET's positive
    values: one window for the whole series, so that colours mean the same on every slice)."""

    upper: float
    unit: str

    @classmethod
    def of(cls, pet: np.ndarray, unit: str) -> "PetWindow":
        positive = pet[pet > 0]
        upper = float(np.percentile(positive, 99.5)) if positive.size else 1.0
        return cls(upper if upper > 0 else 1.0, unit)

    def scaled(self, pet: np.ndarray) -> np.ndarray:
        return np.clip(pet / self.upper, 0.0, 1.0)


def pet_overlay_rgb(fused: np.ndarray, pet: np.ndarray, window: PetWindow) -> np.ndarray:
    """RGB uint8 [..., 3]: ``fused`` (in [0, 1]) in gray with ``pet`` (in the window's unit) in the 'hot' colour
    map over it, opaque where the PET is bright and clear where it is low."""
    from matplotlib import colormaps

    level = window.scaled(pet)
    gray = np.repeat(np.clip(fused, 0, 1)[..., None], 3, axis=-1)
    colour = colormaps[COLOUR_MAP](level)[..., :3]
    alpha = MAX_OPACITY * np.clip((level - CLEAR_BELOW) / (OPAQUE_FROM - CLEAR_BELOW), 0, 1)[..., None]
    return np.rint(255 * ((1 - alpha) * gray + alpha * colour)).astype(np.uint8)


def _label(value: float) -> str:
    return f"{value:.3g}"


def colour_bar_strip(height: int, window: PetWindow) -> np.ndarray:
    """RGB uint8 [height, width, 3]: a vertical colour bar (0 at the bottom, the window's top at the top) with
    its values and unit written beside it, to be put to the right of each colour image."""
    from matplotlib import colormaps
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    labels = [f"{_label(window.upper)} {window.unit}", _label(window.upper / 2), "0"]
    text_width = max(int(ImageDraw.Draw(Image.new("RGB", (1, 1))).textlength(t, font=font)) for t in labels)
    bar_width = max(6, height // 24)
    width = bar_width + text_width + 8
    strip = Image.new("RGB", (width, height), "black")
    levels = np.linspace(1.0, 0.0, height)[:, None].repeat(bar_width, axis=1)
    bar = np.rint(255 * colormaps[COLOUR_MAP](levels)[..., :3]).astype(np.uint8)
    strip.paste(Image.fromarray(bar), (2, 0))
    draw = ImageDraw.Draw(strip)
    x = bar_width + 5
    draw.text((x, 0), labels[0], fill="white", font=font, anchor="la")
    draw.text((x, height // 2), labels[1], fill="white", font=font, anchor="lm")
    draw.text((x, height - 1), labels[2], fill="white", font=font, anchor="ld")
    return np.asarray(strip, dtype=np.uint8)


def with_colour_bar(rgb: np.ndarray, strip: np.ndarray) -> np.ndarray:
    """``rgb`` [rows, columns, 3] with ``strip`` (``colour_bar_strip(rows, ...)``) to its right."""
    return np.concatenate([rgb, strip], axis=1)


def ras_preview(volumes: dict, affine_ras: np.ndarray) -> dict:
    """Volumes [D, H, W] on the MR's grid (slice, row, column) turned to the nearest RAS axes for pictures
    (nibabel's orientation tools); returns them with ``spacing`` (mm along X, Y, Z)."""
    import nibabel as nib

    orientation = nib.orientations.io_orientation(affine_ras)
    spacing_in = nib.affines.voxel_sizes(affine_ras)
    spacing = np.empty(3)
    spacing[orientation[:, 0].astype(int)] = spacing_in
    out = {key: nib.orientations.apply_orientation(np.asarray(v).transpose(2, 1, 0), orientation)
           for key, v in volumes.items()}
    return {**out, "spacing": tuple(float(s) for s in spacing)}


def preview_planes(preview: dict) -> dict:
    """The three planes through the centre of RAS-oriented [X, Y, Z] arrays, as viewers show them (radiological
    convention: the patient's right on the viewer's left; anterior on the left of the sagittal view).

    Returns, per plane, ``cut`` (array -> 2D image, row 0 at the bottom), ``spacing`` (mm per column, mm per row,
    so that anisotropic voxels are drawn at their true aspect) and ``labels`` (left, right, top, bottom)."""
    sx, sy, sz = (float(v) for v in preview.get("spacing", (1.0, 1.0, 1.0)))
    cx, cy, cz = (n // 2 for n in np.asarray(preview["mri"]).shape)
    return {
        "axial": {"cut": lambda v: v[::-1, :, cz].T, "spacing": (sx, sy), "labels": ("R", "L", "A", "P")},
        "coronal": {"cut": lambda v: v[::-1, cy, :].T, "spacing": (sx, sz), "labels": ("R", "L", "S", "I")},
        "sagittal": {"cut": lambda v: v[cx, ::-1, :].T, "spacing": (sy, sz), "labels": ("A", "P", "S", "I")},
    }


def write_preview_png(preview: dict, window: PetWindow, path: Path) -> None:
    """Tri-planar views of MRI, PET, fused and PET over fused (``preview``: RAS [X, Y, Z] arrays ``mri`` and
    ``fused`` in [0, 1], ``pet`` in the window's unit, ``spacing``), in radiological convention with
    orientation labels, true aspect ratio and a colour bar in the PET's unit."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    mri, pet, fused = (np.asarray(preview[k]) for k in ("mri", "pet", "fused"))
    fig, axes = plt.subplots(3, 4, figsize=(13, 9), facecolor="black")
    for row, (plane, spec) in enumerate(preview_planes(preview).items()):
        cut, (col_mm, row_mm), (left, right, top, bottom) = spec["cut"], spec["spacing"], spec["labels"]
        views = [("MRI", cut(mri), "gray", 1.0), ("PET", cut(pet), COLOUR_MAP, window.upper),
                 ("fused", cut(fused), "gray", 1.0),
                 ("PET over fused", pet_overlay_rgb(cut(fused), cut(pet), window), None, 1.0)]
        for col, (title, image, cmap, vmax) in enumerate(views):
            ax = axes[row, col]
            extent = (0, image.shape[1] * col_mm, 0, image.shape[0] * row_mm)
            ax.imshow(image, cmap=cmap, origin="lower", vmin=0, vmax=vmax, interpolation="nearest", extent=extent,
                      aspect="equal")
            ax.set_axis_off()
            for text, x, y in ((left, 0.02, 0.5), (right, 0.98, 0.5), (top, 0.5, 0.97), (bottom, 0.5, 0.03)):
                ax.text(x, y, text, color="yellow", fontsize=9, ha="center", va="center", transform=ax.transAxes)
            if row == 0:
                ax.set_title(title, color="white")
        axes[row, 0].text(-0.05, 0.5, plane, color="white", rotation=90, va="center", ha="right",
                          transform=axes[row, 0].transAxes)
    fig.suptitle("DCFB fusion (research use only); radiological convention: patient's right on the left",
                 color="white")
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    bar_axes = fig.add_axes((0.93, 0.15, 0.015, 0.7))
    bar = fig.colorbar(ScalarMappable(Normalize(0, window.upper), COLOUR_MAP), cax=bar_axes)
    bar.set_label(f"PET ({window.unit})", color="white")
    bar.ax.yaxis.set_tick_params(color="white", labelcolor="white")
    fig.savefig(path, dpi=80, facecolor="black")
    plt.close(fig)

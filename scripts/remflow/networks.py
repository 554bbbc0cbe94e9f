"""Choose which of tk_r_em's six pretrained networks restores an image.

The networks are ``sfr_{hr,lr}{sem,stem,tem}``: the modality is the kind of
microscope image (SEM, STEM, TEM), the resolution says whether atom columns are
resolved (HR) or not (LR).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

MODALITIES = ("sem", "stem", "tem")
RESOLUTIONS = ("hr", "lr")
NETWORKS = tuple(f"sfr_{r}{m}" for r in RESOLUTIONS for m in MODALITIES)

#: Images with pixels at most this size (pm) count as high resolution: atom columns
#: 2-4 Å apart need pixels of about 1 Å or less to be resolved (Nyquist).
DEFAULT_HR_MAX_PIXEL_PM = 100.0

_STEM_DETECTOR_WORDS = {"haadf", "adf", "maadf", "laadf", "stem", "abf", "df2", "df4", "dpc", "idpc"}
_TEM_CAMERA_WORDS = {"ceta", "camera", "ccd", "k2", "k3", "falcon", "oneview", "orius", "ultrascan", "flucam"}


class UndecidableNetwork(ValueError):
    """``auto`` could not decide; the message names the sample-sheet column to fill."""


@dataclass(frozen=True)
class NetworkChoice:
    modality: str
    resolution: str
    modality_reason: str
    resolution_reason: str

    @property
    def network(self) -> str:
        return f"sfr_{self.resolution}{self.modality}"


def flatten_tree(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one dict with dotted keys."""
    out: dict[str, Any] = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(flatten_tree(value, f"{prefix}.{key}" if prefix else str(key)))
    else:
        out[prefix] = tree
    return out


def modality_from_metadata(metadata: dict[str, Any]) -> tuple[str, str] | None:
    """SEM/STEM/TEM from HyperSpy metadata, with the tag that decided it; None if unknown.

    SEM vs TEM comes from ``Acquisition_instrument``; STEM vs TEM from the
    acquisition mode, then from detector or camera names (including the title,
    which DigitalMicrograph and Velox set to the detector, e.g. ``HAADF``).
    """
    instrument = metadata.get("Acquisition_instrument", {}) or {}
    if "SEM" in instrument:
        return "sem", "metadata Acquisition_instrument.SEM"
    tem = instrument.get("TEM")
    if tem is None:
        return None
    mode = str(tem.get("acquisition_mode", "")).strip().upper()
    if mode == "STEM":
        return "stem", "metadata Acquisition_instrument.TEM.acquisition_mode = STEM"
    detector_words = _words(" ".join(f"{k} {v}" for k, v in flatten_tree(tem.get("Detector", {})).items()))
    title_words = _words(str(metadata.get("General", {}).get("title", "")))
    for source, words in (("detector tags", detector_words), ("title", title_words)):
        if words & _STEM_DETECTOR_WORDS:
            return "stem", f"metadata {source} name a STEM detector ({', '.join(sorted(words & _STEM_DETECTOR_WORDS))})"
    if mode == "TEM":
        return "tem", "metadata Acquisition_instrument.TEM.acquisition_mode = TEM"
    for source, words in (("detector tags", detector_words), ("title", title_words)):
        if words & _TEM_CAMERA_WORDS:
            return "tem", f"metadata {source} name a TEM camera ({', '.join(sorted(words & _TEM_CAMERA_WORDS))})"
    return None


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def choose_network(*, sample: str, modality: str, resolution: str, metadata: dict[str, Any],
                   pixel_size_pm: float | None, hr_max_pixel_pm: float = DEFAULT_HR_MAX_PIXEL_PM) -> NetworkChoice:
    """Decide modality and resolution, from the sheet or (``auto``) from the file.

    Raises UndecidableNetwork naming the sample and the column to fill.
    """
    if modality != "auto":
        if modality not in MODALITIES:
            raise UndecidableNetwork(f"sample '{sample}': modality '{modality}' is not one of {', '.join(MODALITIES)}, auto")
        modality_reason = "sample sheet"
    else:
        found = modality_from_metadata(metadata)
        if found is None:
            raise UndecidableNetwork(
                f"sample '{sample}': the file's metadata do not say SEM, STEM or TEM; fill the 'modality' column")
        modality, modality_reason = found
    if resolution != "auto":
        if resolution not in RESOLUTIONS:
            raise UndecidableNetwork(f"sample '{sample}': resolution '{resolution}' is not one of hr, lr, auto")
        resolution_reason = "sample sheet"
    elif pixel_size_pm is None:
        raise UndecidableNetwork(
            f"sample '{sample}': the image has no length calibration to tell HR from LR; "
            "fill the 'resolution' column (or 'pixel_size_pm')")
    else:
        resolution = "hr" if pixel_size_pm <= hr_max_pixel_pm else "lr"
        relation = "<=" if resolution == "hr" else ">"
        resolution_reason = f"pixel size {pixel_size_pm:.4g} pm {relation} {hr_max_pixel_pm:g} pm"
    return NetworkChoice(modality=modality, resolution=resolution,
                         modality_reason=modality_reason, resolution_reason=resolution_reason)


#: Status of an image that is restored but, by its kind, has no atom columns to fit.
NO_COLUMNS_STATUS = "restored (no atom columns)"


def expects_columns(modality: str | None, resolution: str | None) -> bool:
    """Whether atom columns can be in an image of this kind: HR STEM or TEM only.

    SEM images (surfaces, secondary electrons) and low-resolution images of any kind
    are restored but never fitted; an HR image where no lattice is found is different:
    it says "no lattice found".
    """
    return modality in ("stem", "tem") and resolution == "hr"

"""Network choice from the sheet or from metadata."""

from __future__ import annotations

import pytest

from remflow.networks import NETWORKS, UndecidableNetwork, choose_network, modality_from_metadata


def choose(modality="auto", resolution="auto", metadata=None, pixel=None):
    return choose_network(sample="s1", modality=modality, resolution=resolution, metadata=metadata or {},
                          pixel_size_pm=pixel)


def test_six_networks():
    assert sorted(NETWORKS) == sorted(f"sfr_{r}{m}" for r in ("hr", "lr") for m in ("sem", "stem", "tem"))


@pytest.mark.parametrize("metadata, expected", [
    ({"Acquisition_instrument": {"SEM": {"beam_energy": 5}}}, "sem"),
    ({"Acquisition_instrument": {"TEM": {"acquisition_mode": "STEM"}}}, "stem"),
    ({"Acquisition_instrument": {"TEM": {"acquisition_mode": "TEM"}}}, "tem"),
    ({"Acquisition_instrument": {"TEM": {"Detector": {"Name": "HAADF"}}}}, "stem"),
    ({"General": {"title": "HAADF"}, "Acquisition_instrument": {"TEM": {"beam_energy": 300}}}, "stem"),
    ({"General": {"title": "Ceta"}, "Acquisition_instrument": {"TEM": {"beam_energy": 300}}}, "tem"),
    ({"Acquisition_instrument": {"TEM": {"Detector": {"Camera": {"Name": "BM-Ceta"}}}}}, "tem"),
    ({"General": {"title": "operating system log"}, "Acquisition_instrument": {"TEM": {}}}, None),
    ({}, None),
])
def test_modality_from_metadata(metadata, expected):
    found = modality_from_metadata(metadata)
    assert (found[0] if found else None) == expected


def test_resolution_threshold_on_pixel_size():
    assert choose("stem", "auto", pixel=100.0).network == "sfr_hrstem"
    assert choose("stem", "auto", pixel=100.1).network == "sfr_lrstem"
    assert "pixel size 20 pm <= 100 pm" == choose("tem", "auto", pixel=20.0).resolution_reason


def test_sheet_values_win_over_metadata():
    choice = choose("sem", "hr", metadata={"Acquisition_instrument": {"TEM": {"acquisition_mode": "STEM"}}})
    assert choice.network == "sfr_hrsem" and choice.modality_reason == "sample sheet"


@pytest.mark.parametrize("kwargs, column", [({"resolution": "hr"}, "'modality'"),
                                            ({"modality": "tem"}, "'resolution'")])
def test_undecidable_names_sample_and_column(kwargs, column):
    with pytest.raises(UndecidableNetwork, match=f"sample 's1'.*fill the {column} column"):
        choose(**kwargs)

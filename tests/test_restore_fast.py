"""Batched restoration of many small images gives what restoring each alone gives."""

from __future__ import annotations

import numpy as np
import pytest

from remflow.ingest import read_image, resolve_path
from remflow.restore import Restorer, normalisation

SIM = resolve_path("package://tk_r_em/test_data/sfr_hrstem.h5")


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    return [read_image(SIM, dataset="x", frame=f).signal.data for f in range(4)]


@pytest.fixture(scope="module")
def restorer() -> Restorer:
    # Small tiles so that a 96 px image is really tiled.
    return Restorer("sfr_hrstem", max_whole_pixels=64 * 64, tile_px=96, context_px=16, blend_px=16)


@pytest.mark.parametrize("shared_calls", [True, False])
def test_many_images_equal_each_restored_alone(restorer, frames, shared_calls):
    # With shared calls (a GPU's default) same shapes go through the network together; each
    # image keeps its own normalisation, so very different intensity scales must not leak.
    restorer.batch_whole_images = shared_calls
    images = [frames[0][:64, :64], 50 * frames[1][:64, :64] + 1000, frames[2][:64, :64],
              frames[3][:33, :47], frames[0][100:133, 7:54], frames[1][:48, :48] * 0.01]
    together = restorer.restore_many(images)
    assert len(together) == len(images)
    for image, out in zip(images, together):
        alone = restorer.restore(image)
        assert out.shape == image.shape and out.dtype == np.float32
        assert np.abs(out - alone).max() <= 1e-5 * np.ptp(alone)


def test_images_above_the_whole_image_limit_are_tiled_as_restore_does(restorer, frames):
    big = frames[2][:96, :80]
    assert big.size > restorer.max_whole_pixels
    (out,) = restorer.restore_many([big])
    assert np.array_equal(out, restorer.restore_tiled(big))


def test_per_image_normalisation_matches_one_call_per_image(restorer, frames):
    batch = np.stack([frames[0][:32, :32], 7 * frames[1][:32, :32] - 3])
    stats = np.array([normalisation(image) for image in batch])
    joint = restorer.infer(batch, stats[:, 0], stats[:, 1])
    for image, (mean, std), out in zip(batch, stats, joint):
        single = restorer.infer(image[np.newaxis], mean, std)[0]
        assert np.abs(out - single).max() <= 1e-5 * np.ptp(single)


def test_a_member_that_cannot_be_restored_fails_alone(restorer, frames):
    """restore_members (both restoration batch rules): a member whose image the network cannot
    take fails with its name and reason; the others are restored as alone."""
    from remflow.restore import restore_members

    members = {"good": [frames[0][:32, :32]], "flat": [np.zeros(32, dtype=np.float32)],
               "stack": [frames[1][:32, :32], frames[2][:32, :32]]}
    restored, failures = restore_members(restorer, members, "restore")
    assert list(failures) == ["flat"]
    assert failures["flat"].startswith("failed in restore: sample 'flat': ValueError: expected 2D")
    for sample in ("good", "stack"):
        assert len(restored[sample]) == len(members[sample])
        for image, out in zip(members[sample], restored[sample]):
            assert np.array_equal(out, restorer.restore(image))

"""Rule synthesise: a synthetic STEM lattice image with known column positions at one dose."""

from remflow.runlog import setup_logging
from remflow.synthetic import Degradation, LatticeSpec, write_sample

log = setup_logging(snakemake.log[0])
settings = snakemake.params.settings
spec = LatticeSpec(kind=settings["kind"], shape=tuple(settings["shape"]), spacing_px=settings["spacing_px"],
                   sigma_px=settings["sigma_px"], seed=settings["seed"])
degradation = Degradation(dose_e_per_A2=float(snakemake.params.dose), pixel_size_pm=settings["pixel_size_pm"],
                          detector_noise_sigma=settings["detector_noise_sigma"],
                          line_jitter_px=settings["line_jitter_px"], seed=settings["seed"])
write_sample(spec, degradation, snakemake.output.image, snakemake.output.truth)
log.info("wrote %s at dose %g e/A^2", snakemake.output.image, degradation.dose_e_per_A2)

"""Rule synthesise: a synthetic STEM lattice image with known column positions at one dose."""

from remflow.runlog import setup_logging
from remflow.synthetic import write_sample
from remflow.synthetic_samples import benchmark_models

log = setup_logging(snakemake.log[0])
spec, degradation = benchmark_models(snakemake.params.settings, snakemake.params.dose)
write_sample(spec, degradation, snakemake.output.image, snakemake.output.truth)
log.info("wrote %s at dose %g e/A^2", snakemake.output.image, degradation.dose_e_per_A2)

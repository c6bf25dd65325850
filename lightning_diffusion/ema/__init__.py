"""Post-hoc EMA (Karras et al. 2024, EDM2 sec. 3): the profile math (``profiles``), the running averages
a training run tracks (``tracker``), their snapshots on disk (``snapshots``) and the average of any EMA
length rebuilt from them (``reconstruct``)."""

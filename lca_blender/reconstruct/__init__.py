"""Photos to avatar, stage by stage: ingest, perceive, cameras, fit_body, fit_gaussians."""

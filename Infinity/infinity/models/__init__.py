"""Infinity models: `infinity.Infinity` (transformer) and `bsq_vae.vae.vae_model` (BSQ VAE)."""

"""Training side: LightningCLI entry point, callbacks, optimisation recipes, demo, ablation."""

"""Training: the ``VideoClassifier`` LightningModule, optimisation recipes and callbacks."""

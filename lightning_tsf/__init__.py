"""lightning_tsf: TimeSformer video transformers as a PyTorch Lightning experiment framework."""

__version__ = "0.1.0"

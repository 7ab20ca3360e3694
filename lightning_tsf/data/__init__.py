"""Video data: decoding, annotation formats, clip sampling, transforms, the DataModule."""

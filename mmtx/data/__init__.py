"""Input data: tokenizers, preprocessing and datasets."""

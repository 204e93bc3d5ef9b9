"""Images for vision-language models: decoding and limits (image.py), preprocessing per
projector (preprocess.py), the encoder with its embeddings cache (encoder.py, the only module
here that calls the native core) and the placement of image tokens in prompts (placement.py)."""

"""Videos in: decoding and clip sampling (`video`), dataset list formats (`lists`)."""

"""Band mode: bass, pads and drums arranged around a composed piano piece, from its harmony and pulse."""

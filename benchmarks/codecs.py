"""Reference rows from classic image codecs: JPEG and WebP through Pillow, at their lowest qualities.

A small image's file is mostly header: JPEG's quantisation and Huffman tables and markers come to
hundreds of bytes whatever the image. As Toderici et al. (2016) did for 32x32 thumbnails, the bits
counted are those of the image's own code, not the fixed header:

- **JPEG** (baseline, Pillow's standard Huffman tables, 4:2:0 chroma for colour): the bytes of the
  entropy-coded scan, from the end of the start-of-scan header to the end-of-image marker. The
  tables and every other marker segment are the same for every image of a given quality and size.
- **WebP** (lossy, VP8): the bytes of the VP8 bitstream less its 10-byte key-frame header (frame
  tag, start code, width and height). The 20 bytes of RIFF and chunk headers are not counted; the
  first partition, which holds the per-image segment, filter and probability settings, is.

References:
    Toderici et al., Full Resolution Image Compression with Recurrent Neural Networks, 2017
    (arXiv 1608.05148, 2016).
"""

from __future__ import annotations

import io
import struct
import time

import numpy as np
import torch
from PIL import Image

from train.common.metrics import reconstruction_metrics

QUALITIES = (1, 5, 10, 20)
VP8_FRAME_HEADER = 10  # bytes: 3 of frame tag, 3 of start code, 4 of width and height


def jpeg_scan_bytes(data: bytes) -> int:
    """Bytes of a baseline JPEG's entropy-coded scan (start-of-scan header and end marker excluded)."""
    position = 2  # after the start-of-image marker
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            raise ValueError(f"not a JPEG marker at byte {position}")
        marker, length = data[position + 1], struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker == 0xDA:  # start of scan: the entropy-coded data follows its header
            return data.rindex(b"\xff\xd9") - (position + 2 + length)
        position += 2 + length
    raise ValueError("no start-of-scan marker in the JPEG data")


def webp_code_bytes(data: bytes) -> int:
    """Bytes of a lossy WebP's VP8 bitstream less its key-frame header."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or data[12:16] != b"VP8 ":
        raise ValueError("not a simple lossy WebP file (RIFF/WEBP/VP8 )")
    return struct.unpack("<I", data[16:20])[0] - VP8_FRAME_HEADER


def round_trip(image: np.ndarray, codec: str, quality: int) -> tuple[np.ndarray, int]:
    """``image`` ``(H, W, C)`` uint8 encoded and decoded; the decoded image and the bits counted."""
    mode = "L" if image.shape[-1] == 1 else "RGB"
    picture = Image.fromarray(image[..., 0] if mode == "L" else image, mode)
    buffer = io.BytesIO()
    if codec == "JPEG":
        picture.save(buffer, "JPEG", quality=quality)
        counted = jpeg_scan_bytes(buffer.getvalue())
    else:
        picture.convert("RGB").save(buffer, "WEBP", quality=quality, method=6)
        counted = webp_code_bytes(buffer.getvalue())
    decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert(mode))
    return decoded.reshape(image.shape), 8 * counted


def codec_metrics(images: torch.Tensor, codec: str, quality: int) -> dict:
    """The standard figures of ``codec`` at ``quality`` on ``images`` ``(N, C, H, W)`` in [0, 1]."""
    pixels = (images.permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    decoded, bits = [], []
    began = time.perf_counter()
    for image in pixels:
        picture, counted = round_trip(image, codec, quality)
        decoded.append(picture)
        bits.append(counted)
    seconds = time.perf_counter() - began
    reconstructions = torch.from_numpy(np.stack(decoded)).permute(0, 3, 1, 2).float() / 255
    return reconstruction_metrics(images, reconstructions, float(np.mean(bits)), seconds)

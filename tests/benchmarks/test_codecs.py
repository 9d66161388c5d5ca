"""The codec reference rows: JPEG and WebP bits without their fixed headers."""

import io

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks import codecs


def _images(channels: int, count: int = 3) -> torch.Tensor:
    generator = torch.Generator().manual_seed(channels)
    coarse = torch.rand(count, channels, 4, 4, generator=generator)
    return torch.nn.functional.interpolate(coarse, size=32, mode="bilinear", align_corners=False).clamp(0, 1)


def test_jpeg_bits_are_the_scan_alone():
    pixels = (_images(3)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=10)
    data = buffer.getvalue()
    scan = codecs.jpeg_scan_bytes(data)
    assert 0 < scan < len(data) - 500  # the tables and markers are hundreds of bytes
    assert data[-2:] == b"\xff\xd9" and data.index(b"\xff\xda") < len(data) - scan - 2


def test_webp_bits_leave_out_the_container_and_frame_header():
    pixels = (_images(3)[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "WEBP", quality=5)
    data = buffer.getvalue()
    assert codecs.webp_code_bytes(data) == len(data) - 20 - codecs.VP8_FRAME_HEADER
    with pytest.raises(ValueError, match="WebP"):
        codecs.webp_code_bytes(b"not a webp file at all")


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("codec", ["JPEG", "WEBP"])
def test_lower_quality_spends_fewer_bits_for_more_error(codec, channels):
    images = _images(channels)
    low, high = (codecs.codec_metrics(images, codec, quality) for quality in (1, 60))
    assert low["bits_per_image"] < high["bits_per_image"]
    assert low["sse"] > high["sse"] >= 0
    assert low["num_images"] == 3

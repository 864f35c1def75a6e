"""Decoding frames and photos (Pillow): JPEG or PNG only, size limits, EXIF capture time."""

from __future__ import annotations

import base64
import binascii
import io
from datetime import datetime

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

MAX_FRAME_BYTES = 64 * 1024
MAX_PHOTO_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000
FORMATS = ("JPEG", "PNG")
_EXIF_DATETIME_ORIGINAL = 0x9003
_EXIF_IFD = 0x8769


class ImageError(ValueError):
    """A frame or photo that cannot be used; `reason` is `bad_image` or `too_large`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


def frame_bytes(b64: object) -> bytes:
    """The decoded bytes of a base64 frame (ImageError `bad_image` / `too_large`)."""
    if type(b64) is not str:
        raise ImageError("bad_image", "a frame must be a base64 string")
    if len(b64) > (MAX_FRAME_BYTES * 4) // 3 + 8:
        raise ImageError("too_large", f"a frame is over {MAX_FRAME_BYTES} bytes")
    try:
        raw = base64.b64decode(b64, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ImageError("bad_image", "a frame is not valid base64") from e
    if len(raw) > MAX_FRAME_BYTES:
        raise ImageError("too_large", f"a frame is {len(raw)} bytes, over {MAX_FRAME_BYTES}")
    return raw


def sniff(raw: bytes) -> None:
    """Cheap check that bytes are a JPEG or PNG image (header parse, no pixel decode)."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.format not in FORMATS:
                raise ImageError("bad_image", f"{im.format} is not JPEG or PNG")
            if im.width * im.height > MAX_PIXELS:
                raise ImageError("too_large", f"{im.width}x{im.height} pixels")
            im.verify()
    except ImageError:
        raise
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ImageError("bad_image", "not a decodable JPEG or PNG image") from e


def decode(raw: bytes) -> tuple[npt.NDArray[np.uint8], float | None]:
    """RGB pixels (H, W, 3) and the EXIF capture time (POSIX seconds) if the image has one."""
    sniff(raw)
    try:
        with Image.open(io.BytesIO(raw)) as im:
            taken = _exif_time(im)
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, SyntaxError, ValueError) as e:
        raise ImageError("bad_image", "not a decodable JPEG or PNG image") from e
    return rgb, taken


def _exif_time(im: Image.Image) -> float | None:
    try:
        v = im.getexif().get_ifd(_EXIF_IFD).get(_EXIF_DATETIME_ORIGINAL)
        if not v:
            return None
        return datetime.strptime(str(v).strip("\x00 "), "%Y:%m:%d %H:%M:%S").timestamp()
    except (ValueError, KeyError, AttributeError, OSError):
        return None


def encode_jpeg(rgb: npt.NDArray[np.uint8], *, max_bytes: int = MAX_FRAME_BYTES,
                max_side: int = 640) -> bytes:
    """A JPEG of an RGB image within `max_bytes` (downscaled and recompressed as needed);
    used by the simulator and tests to turn photographs into check-in frames."""
    im = Image.fromarray(rgb)
    im.thumbnail((max_side, max_side))
    for q in (90, 85, 80, 70, 60, 50, 40):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        if buf.tell() <= max_bytes:
            return buf.getvalue()
    im.thumbnail((max_side // 2, max_side // 2))
    buf = io.BytesIO()
    im.save(buf, format="JPEG", quality=60)
    return buf.getvalue()

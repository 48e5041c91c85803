"""Decoding one image safely: every way an image can be bad becomes an :class:`ImageError`.

JPEG, PNG, WebP, BMP, GIF, TIFF and, with pillow-heif (installed by ``pip install .``), HEIC/HEIF photos.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse images above this many pixels before decoding them (decompression bombs).
MAX_PIXELS = 64_000_000
os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(MAX_PIXELS))
import cv2  # noqa: E402  (after the pixel limit is set: OpenCV reads it once)

cv2.setNumThreads(1)  # callers parallelise across images

COLOR_MODES = {"grayscale": ("L", 1), "rgb": ("RGB", 3)}

#: How a face is brought to the model's input size; a model's card records the method it was
#: trained with, and serving uses the same one.
#: - "antialias": Gaussian pre-blur (sigma = (factor - 1) / 2 per axis, scikit-image's rule for
#:   downscaling) + bilinear, in OpenCV, which releases the GIL so threads decode in parallel.
#: - "pil_bilinear": PIL's antialiased bilinear (reducing_gap=2); what cards without a
#:   "resize" entry were trained with. It holds the GIL and costs about 3x the time.
RESIZE_METHODS = ("antialias", "pil_bilinear")
DEFAULT_RESIZE = "antialias"
LEGACY_RESIZE = "pil_bilinear"


class ImageError(ValueError):
    """An image that cannot be used, with a message a person can act on."""


def channels(color_mode: str) -> int:
    return COLOR_MODES[_check_mode(color_mode)][1]


def _check_mode(color_mode: str) -> str:
    if color_mode not in COLOR_MODES:
        raise ValueError(f"color_mode must be one of {sorted(COLOR_MODES)}, not {color_mode!r}")
    return color_mode


# Names that say "image": a folder keeps such files even when their bytes do not, to report them.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff", ".heic", ".heif")
_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")
#: The ISO-BMFF brands of HEIC/HEIF stills and sequences (bytes 8-12, after ``ftyp``), decoded by pillow-heif.
_HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1")


def _head(source: str | os.PathLike | bytes) -> bytes:
    if isinstance(source, (bytes, bytearray)):
        return bytes(source[:12])
    with open(source, "rb") as handle:
        return handle.read(12)


def _is_heif(head: bytes) -> bool:
    return head[4:8] == b"ftyp" and head[8:12] in _HEIF_BRANDS


def has_image_signature(source: str | os.PathLike | bytes) -> bool:
    """Whether the first bytes are those of an image format (JPEG, PNG, GIF, BMP, TIFF, WebP, HEIC/HEIF), whatever
    the name."""
    head = _head(source)
    return head.startswith(_SIGNATURES) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP") or _is_heif(head)


def _heif_support(label: str) -> None:
    """Register pillow-heif's opener with PIL (once; it costs ~50 ms, so only when a HEIC/HEIF image comes)."""
    try:
        import pillow_heif
    except ImportError:
        raise ImageError(f"{label}: a HEIC/HEIF image, and pillow-heif is not installed (pip install "
                         "pillow-heif==1.9.0; part of `pip install .`)") from None
    if "HEIF" not in Image.OPEN:
        pillow_heif.register_heif_opener()


def image_files_in(folder: str | os.PathLike) -> list[Path]:
    """The files directly inside ``folder`` that are images by their first bytes (JPEG, PNG, GIF, BMP, TIFF, WebP)
    or by their name (``IMAGE_EXTENSIONS``), sorted by name. A file named like an image is kept even when it is
    empty, unreadable or not an image, so that reading it reports the damage instead of dropping the photo
    unseen; other files (notes, CSVs, hidden files, subfolders) are left out."""
    found = []
    for path in sorted(Path(folder).iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        if path.name.lower().endswith(IMAGE_EXTENSIONS):
            found.append(path)
            continue
        try:
            if has_image_signature(path):
                found.append(path)
        except OSError:
            continue
    return found


def open_image(source: str | os.PathLike | bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image as RGB, honouring EXIF orientation.

    Transparent pixels are composited on white; grayscale and palette images
    become RGB. Raises :class:`ImageError` for missing, empty, non-image,
    truncated, corrupt or oversized files.
    """
    label = "<bytes>" if isinstance(source, (bytes, bytearray)) else str(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise ImageError(f"{label}: empty file")
        handle = io.BytesIO(source)
    else:
        path = Path(source)
        if not label:
            raise ImageError("an empty path: name an image file")
        if path.is_dir():
            raise ImageError(f"{label}: a folder, not an image file")
        if not path.is_file():
            raise ImageError(f"{label}: no such file")
        if path.stat().st_size == 0:
            raise ImageError(f"{label}: empty file (0 bytes)")
        handle = path
    try:
        heif = _is_heif(_head(source))
    except OSError as exc:
        raise ImageError(f"{label}: cannot be read ({exc})") from None
    if heif:
        _heif_support(label)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(handle)
            width, height = img.size
            if width * height > max_pixels:
                raise ImageError(f"{label}: {width}x{height} pixels is more than the limit of "
                                 f"{max_pixels:,} (possible decompression bomb)")
            img.load()
    except ImageError:
        raise
    except UnidentifiedImageError:
        if has_image_signature(source):
            raise ImageError(f"{label}: corrupt or truncated image (its header says it is an image, "
                             "but it cannot be decoded)") from None
        raise ImageError(f"{label}: not an image file (format not recognised)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError(f"{label}: too many pixels (possible decompression bomb): {exc}") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(f"{label}: corrupt or truncated image ({str(exc).strip()})") from None
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def _check_resize(resize: str) -> str:
    if resize not in RESIZE_METHODS:
        raise ValueError(f"resize must be one of {list(RESIZE_METHODS)}, not {resize!r}")
    return resize


def resize_antialiased(array: np.ndarray, image_size: int) -> np.ndarray:
    """Resize an HxW(xC) uint8 array to ``image_size`` squared: Gaussian anti-aliasing, then bilinear."""
    height, width = array.shape[:2]
    if (height, width) == (image_size, image_size):
        return array
    sigma_y, sigma_x = (max(0.0, (side / image_size - 1.0) / 2.0) for side in (height, width))
    if max(sigma_x, sigma_y) > 0.0:  # a sigma near 0 makes OpenCV pick a 1-tap kernel: no blur on that axis
        array = cv2.GaussianBlur(array, (0, 0), sigmaX=max(sigma_x, 1e-3), sigmaY=max(sigma_y, 1e-3))
    return cv2.resize(array, (image_size, image_size), interpolation=cv2.INTER_LINEAR)


def to_model_input(img: Image.Image | np.ndarray, image_size: int, color_mode: str,
                   resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Resize a decoded RGB image (PIL or HxWx3 uint8 array) to ``image_size`` squared, as uint8 HxWxC."""
    mode, _ = COLOR_MODES[_check_mode(color_mode)]
    if _check_resize(resize) == "pil_bilinear":
        img = img if isinstance(img, Image.Image) else Image.fromarray(np.asarray(img, dtype=np.uint8))
        img = img.convert(mode)
        if img.size != (image_size, image_size):
            img = img.resize((image_size, image_size), Image.BILINEAR, reducing_gap=2.0)
        array = np.asarray(img, dtype=np.uint8)
        return array[..., None] if array.ndim == 2 else array
    if isinstance(img, Image.Image):
        array = np.asarray(img.convert("RGB"), dtype=np.uint8)
    else:
        array = np.asarray(img, dtype=np.uint8)
        if array.ndim != 3 or array.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 RGB array, got shape {array.shape}")
    if mode == "L":  # convert first: blurring and resizing one channel is cheaper
        array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
    array = resize_antialiased(np.ascontiguousarray(array), image_size)
    return array[..., None] if array.ndim == 2 else array


def load_for_model(source: str | os.PathLike | bytes, image_size: int, color_mode: str,
                   resize: str = DEFAULT_RESIZE) -> np.ndarray:
    """Decode a file (an aligned face crop) straight to the model's input size.

    Complete JPEGs take a fast path (see :func:`_decode_jpeg_fast`); everything
    else, and every problem, goes through :func:`open_image`.
    """
    _check_mode(color_mode)
    _check_resize(resize)
    if isinstance(source, (str, os.PathLike)) and str(source).lower().endswith((".jpg", ".jpeg")):
        decoded = _decode_jpeg_fast(str(source))
        if decoded is not None:
            return to_model_input(decoded, image_size, color_mode, resize)
    return to_model_input(open_image(source), image_size, color_mode, resize)


_SOF_MARKERS = frozenset({0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


def jpeg_frame_size(head: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's frame header, walking the marker segments in ``head``.

    None when the header is not within ``head`` or is malformed. Much cheaper than opening the
    file with PIL, and it runs before any pixel is decoded (decompression bombs).
    """
    pos = 2  # after SOI
    while pos + 4 <= len(head):
        if head[pos] != 0xFF:
            return None
        marker = head[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = int.from_bytes(head[pos + 2:pos + 4], "big")
        if length < 2:
            return None
        if marker in _SOF_MARKERS:
            if pos + 9 > len(head):
                return None
            height = int.from_bytes(head[pos + 5:pos + 7], "big")
            width = int.from_bytes(head[pos + 7:pos + 9], "big")
            return (width, height) if width and height else None
        if marker == 0xDA:  # start of scan before any frame header
            return None
        pos += 2 + length
    return None


def _decode_jpeg_fast(path: str) -> np.ndarray | None:
    """OpenCV's JPEG decoder, which releases the GIL (PIL's does not), so threads decode in parallel.

    Gives the same pixels as PIL (both are libjpeg-turbo; checked in the tests) and honours EXIF
    orientation. Returns None for anything unusual (not a complete JPEG, too many pixels, a header
    it cannot read, an error), and the caller takes the careful PIL path, which explains the problem.
    """
    try:
        with open(path, "rb") as handle:
            head = handle.read(65536)
            if head[:3] != b"\xff\xd8\xff":
                return None
            handle.seek(-2, os.SEEK_END)
            if handle.read(2) != b"\xff\xd9":  # truncated: no end-of-image marker
                return None
    except (OSError, ValueError):
        return None
    size = jpeg_frame_size(head)
    if size is None or size[0] * size[1] > MAX_PIXELS:  # refuse bombs before decoding
        return None
    # Always decode colour: JPEG's own luma differs from PIL's RGB->L by a few levels, and the
    # serving path converts RGB, so training must too.
    array = cv2.imread(path, cv2.IMREAD_COLOR)
    return None if array is None else cv2.cvtColor(array, cv2.COLOR_BGR2RGB)

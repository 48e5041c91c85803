"""Decoding single images: every bad input is an ImageError with a specific message."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from agegender.data.images import (MAX_PIXELS, ImageError, channels, image_files_in, load_for_model, open_image,
                              to_model_input)

from conftest import BAD_FILES, garbage_after_jfif_header, jpeg_bytes, png_declaring

pytestmark = pytest.mark.runtime  # no TensorFlow needed (make test-runtime)

BY_KIND = {kind: name for name, kind in BAD_FILES.items()}


def bad(bad_folder, kind):
    return bad_folder / BY_KIND[kind]


# -- errors -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("loader", ["open_image", "load_for_model"])
@pytest.mark.parametrize("kind, message", [
    ("text", "not an image file"),
    ("empty", "empty file"),
    ("truncated", "corrupt or truncated"),
    ("corrupt", "corrupt or truncated"),
    ("bomb", "decompression bomb"),
])
def test_bad_files_raise_specific_image_error(bad_folder, loader, kind, message):
    path = bad(bad_folder, kind)
    with pytest.raises(ImageError) as info:
        if loader == "open_image":
            open_image(path)
        else:
            load_for_model(path, 64, "grayscale")
    text = str(info.value)
    assert message in text
    assert str(path) in text  # says which file


def test_missing_file(tmp_path):
    for loader in (lambda p: open_image(p), lambda p: load_for_model(p, 32, "rgb")):
        with pytest.raises(ImageError, match="no such file"):
            loader(tmp_path / "nope.jpg")
    with pytest.raises(ImageError, match="a folder, not an image file"):
        open_image(tmp_path)
    with pytest.raises(ImageError, match="an empty path"):
        open_image("")  # Path("") would be the working directory


def test_bytes_input(bad_folder, good_names):
    with pytest.raises(ImageError, match="empty file"):
        open_image(b"")
    with pytest.raises(ImageError, match="not an image file"):
        open_image(b"hello world, not an image")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        open_image(bad(bad_folder, "truncated").read_bytes())
    img = open_image((bad_folder / good_names[0]).read_bytes())
    assert img.mode == "RGB" and img.size == (200, 200)


def test_bomb_png_is_tiny_and_declares_huge_size(bad_folder, monkeypatch):
    path = bad(bad_folder, "bomb")
    assert path.stat().st_size < 200
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    with Image.open(path) as img:  # PIL reads the header without decoding
        assert img.size == (20000, 20000)


def test_corrupt_jpeg_header_is_valid(bad_folder):
    with Image.open(bad(bad_folder, "corrupt")) as img:  # opens (headers fine), fails only when decoded
        assert img.format == "JPEG" and img.size == (200, 200)


def test_jpeg_signature_with_garbage_is_reported_corrupt(bad_folder, good_names):
    blob = garbage_after_jfif_header((bad_folder / good_names[0]).read_bytes())
    with pytest.raises(ImageError, match="corrupt"):
        open_image(blob)


def test_own_pixel_limit_below_pil_limit(tmp_path):
    # 9000 x 9000 = 81 M pixels: under PIL's own bomb threshold, over MAX_PIXELS
    assert 9000 * 9000 > MAX_PIXELS
    path = tmp_path / "big.png"
    path.write_bytes(png_declaring(9000, 9000))
    with pytest.raises(ImageError, match="9000x9000 pixels is more than the limit"):
        open_image(path)
    with pytest.raises(ImageError, match="pixels"):
        load_for_model(path, 64, "rgb")


def test_max_pixels_argument(bad_folder, good_names):
    path = bad_folder / good_names[0]
    with pytest.raises(ImageError, match="200x200 pixels is more than the limit of 1,000"):
        open_image(path, max_pixels=1000)
    assert open_image(path, max_pixels=200 * 200).size == (200, 200)


def test_image_error_is_value_error():
    assert issubclass(ImageError, ValueError)


# -- conversions ------------------------------------------------------------------------------------
def test_png_alpha_composited_on_white(bad_folder):
    path = bad(bad_folder, "alpha")
    with Image.open(path) as raw:
        assert raw.mode == "RGBA"
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (200, 200)
    array = np.asarray(img)
    assert (array[0] == 255).all()  # alpha 0 on the top row -> white
    opaque = np.asarray(Image.open(path).convert("RGB"))
    assert np.abs(array[-1].astype(int) - opaque[-1].astype(int)).max() <= 2  # alpha 255 on the bottom row


def test_grayscale_jpeg_to_rgb(bad_folder):
    path = bad(bad_folder, "grayscale")
    with Image.open(path) as raw:
        assert raw.mode == "L"
    img = open_image(path)
    assert img.mode == "RGB"
    array = np.asarray(img)
    assert (array[..., 0] == array[..., 1]).all() and (array[..., 1] == array[..., 2]).all()
    assert load_for_model(path, 48, "rgb").shape == (48, 48, 3)
    assert load_for_model(path, 48, "grayscale").shape == (48, 48, 1)


def test_webp_to_rgb(bad_folder):
    path = bad(bad_folder, "webp")
    img = open_image(path)
    assert img.mode == "RGB" and img.size == (200, 200)
    assert load_for_model(path, 64, "rgb").shape == (64, 64, 3)


def test_palette_png_with_transparency(tmp_path):
    img = Image.new("P", (10, 10), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    img.paste(1, (0, 5, 10, 10))
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    out = np.asarray(open_image(path))
    assert out.shape == (10, 10, 3)
    assert (out[0, 0] == 255).all()  # transparent palette index -> white
    assert tuple(out[9, 9]) == (255, 0, 0)


def _half_and_half(width=40, height=20) -> Image.Image:
    """Left half red, right half blue."""
    img = Image.new("RGB", (width, height), (0, 0, 255))
    img.paste((255, 0, 0), (0, 0, width // 2, height))
    return img


def _with_orientation(img: Image.Image, orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return jpeg_bytes(img, quality=95, exif=exif.tobytes())


def test_exif_orientation_honoured(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_with_orientation(_half_and_half(), 6))
    with Image.open(path) as raw:
        assert raw.size == (40, 20)
    img = open_image(path)
    assert img.size == (20, 40)  # transposed
    array = np.asarray(img).astype(int)
    # orientation 6 = rotate 90 degrees clockwise to display: the left (red) half ends up on top
    assert array[2, 10, 0] > 200 and array[2, 10, 2] < 60
    assert array[-3, 10, 2] > 200 and array[-3, 10, 0] < 60


def test_exif_orientation_honoured_by_fast_path(tmp_path):
    """load_for_model's JPEG draft path must not skip the EXIF rotation."""
    path = tmp_path / "rotated.jpg"
    path.write_bytes(_with_orientation(_half_and_half(80, 40), 6))
    array = load_for_model(path, 32, "rgb").astype(int)
    assert array.shape == (32, 32, 3)
    assert array[3, 16, 0] > 200 and array[3, 16, 2] < 60  # top is red
    assert array[-4, 16, 2] > 200 and array[-4, 16, 0] < 60  # bottom is blue
    plain = tmp_path / "plain.jpg"
    plain.write_bytes(_with_orientation(_half_and_half(80, 40), 1))
    array = load_for_model(plain, 32, "rgb").astype(int)
    assert array[16, 3, 0] > 200 and array[16, -4, 2] > 200  # left red, right blue


# -- model input ------------------------------------------------------------------------------------
@pytest.mark.parametrize("mode, c", [("grayscale", 1), ("rgb", 3)])
def test_to_model_input_shapes(mode, c):
    img = _half_and_half(50, 30)
    array = to_model_input(img, 24, mode)
    assert array.shape == (24, 24, c) and array.dtype == np.uint8
    assert channels(mode) == c


def test_bad_color_mode():
    with pytest.raises(ValueError, match="color_mode"):
        to_model_input(_half_and_half(), 24, "cmyk")
    with pytest.raises(ValueError, match="color_mode"):
        load_for_model(b"", 24, "bgr")


@pytest.mark.parametrize("mode", ["grayscale", "rgb"])
def test_fast_path_matches_careful_path(bad_folder, good_names, mode):
    """JPEG draft decoding is an optimisation: it must give (nearly) the same pixels."""
    for name in good_names[:3]:
        path = bad_folder / name
        fast = load_for_model(path, 64, mode).astype(int)
        careful = to_model_input(open_image(path), 64, mode).astype(int)
        assert fast.shape == careful.shape
        assert np.abs(fast - careful).mean() < 4.0


def test_bytes_to_model_input(bad_folder, good_names):
    data = (bad_folder / good_names[0]).read_bytes()
    array = load_for_model(data, 40, "grayscale")
    assert array.shape == (40, 40, 1) and array.dtype == np.uint8
    assert 20 < array.mean() < 235  # a face, not a blank image


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (30, 30), (0, 255, 255, 0))  # red in CMYK
    buffer = io.BytesIO()
    img.save(buffer, format="JPEG")
    path = tmp_path / "cmyk.jpg"
    path.write_bytes(buffer.getvalue())
    out = open_image(path)
    assert out.mode == "RGB"
    r, g, b = np.asarray(out)[15, 15].astype(int)
    assert r > 200 and g < 60 and b < 60
    assert load_for_model(path, 16, "rgb").shape == (16, 16, 3)


def test_fast_jpeg_path_gives_the_same_pixels_as_the_careful_path(good_names, bad_folder):
    """Training decodes with OpenCV, serving with PIL: the model must see the same pixels."""
    from agegender.data.images import load_for_model, open_image, to_model_input

    for name in good_names[:4]:
        path = bad_folder / name
        for size, mode in ((128, "grayscale"), (112, "rgb")):
            for resize in ("antialias", "pil_bilinear"):
                np.testing.assert_array_equal(load_for_model(path, size, mode, resize),
                                              to_model_input(open_image(path), size, mode, resize))


# -- resizing ---------------------------------------------------------------------------------------
def test_antialiased_resize_removes_aliasing():
    """A 1-pixel checkerboard (the worst case) shrunk 200 -> 112: less moire than plain bilinear.

    The pre-blur follows scikit-image's rule, which is mild: natural images have little energy at
    the pixel frequency, and training and serving resize the same way.
    """
    import cv2

    from agegender.data.images import resize_antialiased

    board = ((np.indices((200, 200)).sum(axis=0) % 2) * 255).astype(np.uint8)
    small = resize_antialiased(board, 112).astype(float)
    plain = cv2.resize(board, (112, 112), interpolation=cv2.INTER_LINEAR).astype(float)
    assert small.shape == (112, 112)
    assert abs(small.mean() - 127.5) < 3 and small[4:-4, 4:-4].std() < 0.8 * plain[4:-4, 4:-4].std()
    flat = np.full((200, 150, 3), 77, np.uint8)  # non-square input, constant colour stays exact
    np.testing.assert_array_equal(resize_antialiased(flat, 64), np.full((64, 64, 3), 77, np.uint8))
    assert resize_antialiased(flat[:40, :40], 64).shape == (64, 64, 3)  # upscaling: no blur, just bilinear
    same = np.arange(64 * 64, dtype=np.uint32).reshape(64, 64).astype(np.uint8)
    assert resize_antialiased(same, 64) is same


def test_resize_methods_are_close_and_checked():
    face = np.asarray(_half_and_half().resize((200, 200)), dtype=np.uint8)
    new = to_model_input(face, 112, "rgb", "antialias").astype(int)
    legacy = to_model_input(Image.fromarray(face), 112, "rgb", "pil_bilinear").astype(int)
    assert new.shape == legacy.shape == (112, 112, 3)
    assert np.abs(new - legacy).mean() < 3.0
    assert to_model_input(face, 32, "grayscale").shape == (32, 32, 1)
    with pytest.raises(ValueError, match="resize must be one of"):
        to_model_input(face, 32, "rgb", "lanczos")
    with pytest.raises(ValueError, match="HxWx3"):
        to_model_input(face[..., 0], 32, "rgb")


def test_jpeg_frame_size_reads_the_header(tmp_path):
    from agegender.data.images import jpeg_frame_size

    for size, kwargs in (((123, 45), {}), ((64, 300), {"progressive": True}), ((17, 17), {"quality": 30})):
        data = jpeg_bytes(Image.new("RGB", size, (10, 200, 30)), **kwargs)
        assert jpeg_frame_size(data) == size
        assert jpeg_frame_size(data[:20]) is None  # header cut before the frame
    assert jpeg_frame_size(b"\xff\xd8" + b"\x00" * 50) is None  # not a marker
    assert jpeg_frame_size(b"\xff\xd8\xff\xda\x00\x08" + b"\x00" * 20) is None  # scan before any frame


def test_image_files_in_a_folder_are_found_by_content_or_name_sorted_and_not_recursive(tmp_path):
    photo = jpeg_bytes(Image.new("RGB", (8, 8)))
    (tmp_path / "b_no_extension").write_bytes(photo)  # found by its bytes, not its name
    (tmp_path / "a.jpg").write_bytes(photo)
    (tmp_path / ".hidden.jpg").write_bytes(photo)
    (tmp_path / "damaged.JPG").write_text("a text file with an image's name")  # kept, so reading it reports it
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("notes beside the photos")
    (tmp_path / "faces.csv").write_text("x,y\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(photo)
    assert image_files_in(tmp_path) == [tmp_path / "a.jpg", tmp_path / "b_no_extension", tmp_path / "damaged.JPG",
                                        tmp_path / "empty.png"]

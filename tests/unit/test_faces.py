"""The face stage on real photos (scikit-image's): detection, the authors' alignment crop,
the inverse warp and blend, the U-2-Net demo crop, and inputs that try to break them."""

from __future__ import annotations

import io
import tracemalloc

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data

import faces
from core.settings import Settings
from faces.align import TEMPLATE_96x112
from faces.warp import warp_affine


@pytest.fixture(scope="module")
def astronaut() -> Image.Image:
    return Image.fromarray(data.astronaut())


def face_patch(astronaut: Image.Image) -> Image.Image:
    """The astronaut's head with some margin (the face is near (220, 120))."""
    return astronaut.crop((140, 20, 310, 210))


# ---------------------------------------------------------------- reference implementations
def authors_crop(image: np.ndarray, points: np.ndarray, ratio: float = 0.75,
                 size: int = 288) -> tuple[np.ndarray, np.ndarray]:
    """DCT-Net's warp_and_crop_face(default_square=True) re-implemented step by step:
    the template +1 px, squared to 112, scaled about 56 by ratio and to the crop size; a
    least-squares similarity from the reference to the image points, a reflective one as
    well, the better one kept (compared against the reference after its reflection, as
    the authors' code does it in place); cv2.warpAffine with a white border."""
    ref = np.float32(TEMPLATE_96x112 + 1 + np.array([8.0, 0.0]))
    ref = (ref - 112 / 2) * ratio + 112 / 2
    ref *= size / 112.0
    src = np.float32(points)

    def fit(uv: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        n = xy.shape[0]
        x, y = xy[:, :1], xy[:, 1:]
        a = np.vstack([np.hstack([x, y, np.ones((n, 1)), np.zeros((n, 1))]),
                       np.hstack([y, -x, np.zeros((n, 1)), np.ones((n, 1))])])
        b = np.vstack([uv[:, :1], uv[:, 1:]])
        sc, ss, tx, ty = np.squeeze(np.linalg.lstsq(a, b, rcond=None)[0])
        t_inv = np.array([[sc, -ss, 0], [ss, sc, 0], [tx, ty, 1]])
        t = np.linalg.inv(t_inv)
        t[:, 2] = [0, 0, 1]
        return t, t_inv

    def apply(t: np.ndarray, uv: np.ndarray) -> np.ndarray:
        return (np.hstack([uv, np.ones((uv.shape[0], 1))]) @ t)[:, :2]

    xy = ref.copy()
    t1, t1_inv = fit(src, xy)
    xy[:, 0] = -xy[:, 0]  # the authors reflect their only copy of the reference
    t2r, _ = fit(src, xy)
    t2 = t2r @ np.diag([-1.0, 1.0, 1.0])
    if np.linalg.norm(apply(t1, src) - xy) <= np.linalg.norm(apply(t2, src) - xy):
        tfm, tfm_inv = t1[:, :2].T, t1_inv[:, :2].T
    else:
        tfm, tfm_inv = t2[:, :2].T, np.linalg.inv(t2)[:, :2].T
    crop = cv2.warpAffine(image, tfm, (size, size), borderValue=(255, 255, 255))
    return crop, tfm_inv


def authors_blend(frame: np.ndarray, head: np.ndarray, mask: np.ndarray,
                  tfm_inv: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    head_back = cv2.warpAffine(head, tfm_inv, (w, h), borderValue=(0, 0, 0))
    mask_back = cv2.warpAffine(mask, tfm_inv, (w, h), borderValue=(0, 0, 0))[:, :, None]
    return mask_back * head_back + (1 - mask_back) * frame


# ---------------------------------------------------------------------------- detection
def test_astronaut_has_one_face_with_points_on_eyes_nose_and_mouth(astronaut):
    found = faces.detect(astronaut)
    assert len(found) == 1
    face = found[0]
    # Read off the photo: eye centres, nose tip, mouth corners (left to right in the image).
    expected = np.array([[201, 101], [246, 101], [221, 124], [199, 143], [239, 143]])
    assert np.abs(face.points - expected).max() <= 8, face.points
    x, y, w, h = face.box
    assert (face.points[:, 0] > x).all() and (face.points[:, 0] < x + w).all()
    assert (face.points[:, 1] > y).all() and (face.points[:, 1] < y + h).all()
    assert 0.5 <= face.score <= 1.0


@pytest.mark.parametrize("name", ["chelsea", "coffee"])
def test_no_human_face_finds_none(name):
    assert faces.detect(Image.fromarray(getattr(data, name)())) == []


def test_two_pasted_faces_are_found_biggest_first(astronaut):
    canvas = Image.new("RGB", (520, 300), (128, 128, 128))
    head = face_patch(astronaut)
    canvas.paste(head.resize((136, 152)), (20, 70))
    canvas.paste(head.resize((221, 247)), (250, 20))
    found = faces.detect(canvas)
    assert len(found) == 2
    assert found[0].area > found[1].area
    assert found[0].box[0] > 250 and found[1].box[0] < 250


def test_points_come_back_in_frame_coordinates_after_downscaling(astronaut):
    full = faces.detect(astronaut)[0]
    big = astronaut.resize((1536, 1536), Image.Resampling.BICUBIC)
    search = faces.find_faces(big, faces.DetectLimits(max_side=512))
    assert search.scale == pytest.approx(1 / 3)
    assert len(search.faces) == 1
    assert np.abs(search.faces[0].points / 3 - full.points).max() <= 3


def test_fifty_faces_are_capped_biggest_first(astronaut):
    head = face_patch(astronaut).resize((96, 108))
    grid = Image.new("RGB", (96 * 10, 108 * 5), (200, 200, 200))
    for i in range(50):
        grid.paste(head, ((i % 10) * 96, (i // 10) * 108))
    search = faces.find_faces(grid, faces.DetectLimits(max_side=960, max_faces=8))
    assert len(search.faces) == 8
    assert search.found >= 40
    assert search.dropped == search.found - 8
    areas = [f.area for f in search.faces]
    assert areas == sorted(areas, reverse=True)
    assert faces.find_faces(grid, faces.DetectLimits(max_faces=0)).faces == []


def test_detection_allocates_only_its_downscaled_copy():
    big = Image.new("RGB", (6000, 4000), (90, 120, 150))  # 72 MB of pixels
    tracemalloc.start()
    try:
        faces.detect(big)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8 * 1024 * 1024, peak  # the 640x427 copy is 0.8 MB


@pytest.mark.parametrize("bad", [dict(max_side=10), dict(max_side=2000), dict(max_faces=-1),
                                 dict(min_score=1.5), dict(threads=0)])
def test_limits_refuse_nonsense(bad):
    with pytest.raises(ValueError):
        faces.DetectLimits(**bad)


def test_limits_follow_the_settings():
    settings = Settings(face_detect_max_side=480, face_max_per_image=3, face_min_score=0.7)
    limits = faces.DetectLimits.from_settings(settings)
    assert (limits.max_side, limits.max_faces, limits.min_score) == (480, 3, 0.7)


# ---------------------------------------------------------------------------- alignment
def test_reference_points_are_the_authors_square_288_template():
    ref = faces.reference_points()
    assert ref.shape == (5, 2)
    # eyes level and about the crop's centre line (the authors' +1 px moves them ~2 px
    # right at 288), mouth below the nose
    assert abs(ref[0, 1] - ref[1, 1]) < 1
    assert (ref[0, 0] + ref[1, 0]) / 2 == pytest.approx(144 + 0.75 * 288 / 112, abs=0.5)
    assert ref[3, 1] > ref[2, 1] > ref[0, 1]
    assert faces.reference_points(ratio=1.0)[0, 0] == pytest.approx(
        (30.29459953 + 1 + 8) * 288 / 112, abs=1e-3)


def test_crop_equals_the_authors_warp_and_crop_face(astronaut):
    image = np.asarray(astronaut)
    rng = np.random.default_rng(7)
    base = faces.detect(astronaut)[0].points
    cases = [base] + [base + rng.normal(0, 4, (5, 2)) + rng.uniform(-120, 120, 2)
                      for _ in range(6)]
    for points in cases:
        alignment = faces.align(points)
        ours = faces.crop_face(image, alignment)
        theirs, tfm_inv = authors_crop(image, points)
        diff = np.abs(ours.astype(int) - theirs.astype(int))
        assert diff.max() <= 2, diff.max()
        assert np.allclose(alignment.to_image, tfm_inv, atol=1e-4)
    # the crop really is aligned: the eyes land on the reference eyes; a smile moves the
    # mouth corners off the template's a little (a least-squares fit of all five)
    alignment = faces.align(base)
    moved = np.hstack([base, np.ones((5, 1))]) @ alignment.to_crop.T
    offsets = np.hypot(*(moved - faces.reference_points()).T)
    assert offsets[:2].max() < 8 and offsets.max() < 20, offsets


def test_rotated_face_is_aligned_upright(astronaut):
    rotated = astronaut.rotate(30, resample=Image.Resampling.BILINEAR, expand=True,
                               fillcolor=(255, 255, 255))
    found = faces.detect(rotated)
    assert len(found) == 1
    alignment = faces.align(found[0].points)
    angle = np.degrees(np.arctan2(alignment.to_image[1, 0], alignment.to_image[0, 0]))
    assert angle == pytest.approx(-30, abs=6)  # the crop turns the face back by ~30 deg
    crop = faces.crop_face(np.asarray(rotated), alignment)
    # the upright crop of the rotated photo finds its face where the template puts it
    again = faces.detect(Image.fromarray(crop))
    assert len(again) == 1
    assert np.abs(again[0].points - faces.reference_points()).max() < 20


def test_coinciding_points_are_refused():
    with pytest.raises(faces.LandmarksDegenerate):
        faces.align(np.full((5, 2), 10.0))
    with pytest.raises(faces.LandmarksDegenerate):
        faces.align(np.array([[np.nan, 1]] * 5))


def test_warp_matches_cv2_on_uint8_and_float_with_borders():
    rng = np.random.default_rng(3)
    src = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    matrix = np.array([[0.83, -0.41, 9.3], [0.37, 0.91, -6.1]])
    ours = warp_affine(src, matrix, (70, 60), border=17.0)
    theirs = cv2.warpAffine(src, matrix, (70, 60), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                            borderValue=(17, 17, 17))
    assert np.abs(ours.astype(int) - theirs).max() <= 1
    grey = rng.random((40, 30), dtype=np.float32)
    ours_f = warp_affine(grey, matrix, (50, 45), origin=(5, 3))
    shifted = matrix.copy()
    shifted[:, 2] += matrix[:, :2] @ np.array([5.0, 3.0])
    theirs_f = cv2.warpAffine(grey, shifted, (50, 45),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert np.abs(ours_f - theirs_f).max() < 1e-4


# ------------------------------------------------------------------------ paste back, blend
def test_blend_equals_the_authors_inverse_warp_and_mask(astronaut):
    image = np.asarray(astronaut)
    points = faces.detect(astronaut)[0].points
    alignment = faces.align(points)
    crop = faces.crop_face(image, alignment)
    head = (255 - crop).astype(np.float32)  # a stand-in head model: the negative
    mask = faces.soft_mask()
    frame = image.astype(np.float32)
    box = faces.paste_back(frame, head, alignment, mask)
    _, tfm_inv = authors_crop(image, points)
    expected = authors_blend(image.astype(np.float32), head, mask, tfm_inv)
    assert np.abs(frame - expected).max() < 0.05
    x0, y0, x1, y1 = box
    changed = np.argwhere(np.abs(frame - image).max(axis=2) > 0)
    assert changed[:, 0].min() >= y0 and changed[:, 0].max() < y1
    assert changed[:, 1].min() >= x0 and changed[:, 1].max() < x1


def test_identity_head_leaves_the_face_region_as_it_was(astronaut):
    image = np.asarray(astronaut)
    alignment = faces.align(faces.detect(astronaut)[0].points)
    frame = image.astype(np.float32)
    faces.paste_back(frame, faces.crop_face(image, alignment), alignment)
    diff = np.abs(frame - image)
    # two bilinear resamplings soften edges a little; nothing more
    assert diff.mean() < 0.5
    assert np.percentile(diff, 99.9) < 12


def test_paste_back_with_an_empty_mask_changes_nothing(astronaut):
    image = np.asarray(astronaut)
    alignment = faces.align(faces.detect(astronaut)[0].points)
    frame = image.astype(np.float32)
    faces.paste_back(frame, np.zeros((288, 288, 3), np.float32), alignment,
                     np.zeros((288, 288), np.float32))
    assert np.array_equal(frame, image.astype(np.float32))


def test_soft_mask_is_one_in_the_middle_and_zero_at_the_edges():
    mask = faces.soft_mask()
    assert mask.shape == (288, 288) and mask.dtype == np.float32
    assert mask[150, 144] == 1.0
    assert mask[0].max() == 0 and mask[:, 0].max() == 0 and mask[-1].max() == 0
    assert 0.0 <= mask.min() and mask.max() <= 1.0
    row = mask[150, 144:]
    assert (np.diff(row) <= 1e-6).all()  # falls off monotonically


def test_a_supplied_mask_is_read_as_grey_and_resized():
    ramp = np.tile(np.linspace(0, 255, 576).astype(np.uint8), (576, 1))
    buf = io.BytesIO()
    Image.fromarray(np.dstack([ramp] * 3)).save(buf, "PNG")
    mask = faces.load_mask(buf.getvalue())
    assert mask.shape == (288, 288)
    assert mask[0, 0] < 0.01 and mask[0, -1] > 0.99


def test_paste_back_refuses_mismatched_shapes(astronaut):
    alignment = faces.align(faces.detect(astronaut)[0].points)
    frame = np.zeros((512, 512, 3), np.float32)
    with pytest.raises(ValueError):
        faces.paste_back(frame, np.zeros((100, 100, 3), np.float32), alignment)
    with pytest.raises(TypeError):
        faces.paste_back(frame.astype(np.uint8), np.zeros((288, 288, 3)), alignment)


# ------------------------------------------------------------------------ hard inputs
def run_stage(image: Image.Image, limits: faces.DetectLimits = faces.DetectLimits()) -> int:
    """Every step on every face found; returns how many faces went through."""
    pixels = np.asarray(image.convert("RGB"))
    frame = pixels.astype(np.float32)
    for face in faces.detect(image, limits):
        alignment = faces.align(face.points)
        crop = faces.crop_face(pixels, alignment)
        assert crop.shape == (288, 288, 3)
        faces.paste_back(frame, 255 - crop.astype(np.float32), alignment)
    assert np.isfinite(frame).all()
    return len(faces.detect(image, limits))


def test_face_cut_by_the_border(astronaut):
    cut = astronaut.crop((215, 0, 512, 512))  # the left half of the face is gone
    found = faces.detect(cut)
    run_stage(cut)
    for face in found:
        crop = faces.crop_face(np.asarray(cut), faces.align(face.points))
        assert (crop[:, :20] == 255).all()  # outside the photo the crop is white


@pytest.mark.parametrize("size", [(1, 1), (3, 2), (16, 16), (48, 48), (2000, 12)])
def test_tiny_images_and_tiny_faces(astronaut, size):
    run_stage(astronaut.resize(size))


def test_huge_face_filling_the_frame(astronaut):
    huge = astronaut.crop((175, 55, 275, 175)).resize((1500, 1800))
    assert run_stage(huge) >= 1


def test_upside_down_and_sideways_faces(astronaut):
    for angle in (90, 180, 270):
        run_stage(astronaut.rotate(angle, expand=True))


@pytest.mark.parametrize("mode", ["RGBA", "L", "P", "CMYK", "I", "F", "LA", "1"])
def test_any_image_mode_is_searched_as_rgb(astronaut, mode):
    found = faces.detect(astronaut.convert(mode))
    # a dithered 1-bit photo keeps too little of the face to promise anything but no error
    assert len(found) == 1 or (mode == "1" and len(found) <= 1)


def test_face_entirely_outside_the_frame_pastes_nothing(astronaut):
    alignment = faces.align(faces.detect(astronaut)[0].points + 5000)
    frame = np.zeros((64, 64, 3), np.float32)
    assert faces.paste_back(frame, np.zeros((288, 288, 3), np.float32), alignment) is None
    assert (faces.crop_face(np.asarray(astronaut), alignment) == 255).all()


def test_concurrent_detections_agree_with_sequential_ones(astronaut):
    from concurrent.futures import ThreadPoolExecutor

    images = [astronaut.rotate(angle, expand=True) for angle in (0, 15, -15, 90)]
    expected = [[f.points for f in faces.detect(im)] for im in images]
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda im: [f.points for f in faces.detect(im)], images * 3))
    for got, want in zip(results, expected * 3, strict=True):
        assert len(got) == len(want)
        for a, b in zip(got, want, strict=True):
            assert np.allclose(a, b, atol=1e-3)

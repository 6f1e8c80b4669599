"""Drawing one SynthCC person with PIL and numpy (2x supersampled, then box-downsampled).

Layers, back to front: the camera's textured background; a backpack seen from the side; legs (skin or the
bottom garment), skirt, shoes; the torso in the top colour with its pattern; arms with sleeves and hands; neck,
head (shape and skin), hair (style and colour), face marks when facing the camera; props and bags. Then the
camera: lighting gain, optional low resolution ("far"), blur, pixel noise.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from data_manifests.synthcc.attributes import ARM_SWINGS, BLURS, CLOTH_COLOURS, LIGHTINGS, SCALES, STRIDES

SS = 2  # supersampling factor

Colour = tuple[int, int, int]


def _c(rgb: Any, k: float = 1.0) -> Colour:
    return tuple(int(max(0, min(255, round(v * k)))) for v in rgb)  # type: ignore[return-value]


# ----------------------------------------------------------------------------------------- backgrounds
@lru_cache(maxsize=64)
def background(kind: str, bg_seed: int, hue: float, h: int, w: int) -> np.ndarray:
    """A camera's background texture, ``(h + pad, w + pad, 3)`` float32, cropped per image at an offset."""
    rng = np.random.default_rng(bg_seed)
    pad = 16 * SS
    H, W = h + pad, w + pad
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    shift = np.array([hue * 18, hue * 6, -hue * 14], dtype=np.float32)
    noise = rng.normal(0, 1, size=(H, W, 1)).astype(np.float32)
    if kind == "brick wall":
        base = np.array([150, 78, 60], np.float32) + shift
        bh, bw = 7 * SS, 16 * SS
        row = (yy // bh).astype(int)
        off = (row % 2) * (bw // 2)
        mortar = ((yy % bh) < SS) | (((xx + off) % bw) < SS)
        img = np.broadcast_to(base, (H, W, 3)).copy() + noise * 8
        brick_var = rng.normal(0, 10, size=(H // bh + 2, W // bw + 3)).astype(np.float32)
        img += brick_var[row, ((xx + off) // bw).astype(int)][..., None]
        img[mortar] = np.array([190, 185, 175], np.float32)
    elif kind == "grass":
        base = np.array([70, 128, 56], np.float32) + shift
        streak = rng.normal(0, 14, size=(1, W, 1)).astype(np.float32)
        img = base + noise * 14 + streak + (yy[..., None] / H) * np.array([10, 20, 0], np.float32)
    elif kind == "pavement":
        base = np.array([150, 146, 140], np.float32) + shift
        tile = 18 * SS
        grid = ((yy % tile) < SS) | ((xx % tile) < SS)
        img = np.broadcast_to(base, (H, W, 3)).copy() + noise * 9
        img[grid] -= 40
    elif kind == "office":
        wall = np.array([206, 200, 182], np.float32) + shift
        floor = np.array([110, 96, 84], np.float32) + shift * 0.5
        horizon = int(H * 0.62)
        img = np.where((yy >= horizon)[..., None], floor, wall) + noise * 4
        img[(yy > horizon - 3 * SS) & (yy < horizon)] = np.array([90, 80, 70], np.float32)
        door = (xx > W * 0.08) & (xx < W * 0.3) & (yy > H * 0.2) & (yy < horizon)
        img[door] = np.array([140, 110, 80], np.float32) + shift
    elif kind == "corridor":
        t = (yy / H)[..., None]
        img = (1 - t) * (np.array([176, 186, 196], np.float32) + shift) + t * np.array(
            [88, 92, 100], np.float32
        )
        img = img + noise * 4
        lines = np.abs(xx - W / 2) - (yy - H * 0.55) * 0.9
        img[(np.abs(lines) < SS) & (yy > H * 0.55)] -= 50
    elif kind == "parking lot":
        base = np.array([72, 72, 76], np.float32) + shift * 0.4
        img = np.broadcast_to(base, (H, W, 3)).copy() + noise * 10
        stripe = (np.abs(xx - W * 0.8) < 2 * SS) & (yy > H * 0.4)
        img[stripe] = np.array([220, 196, 40], np.float32)
    elif kind == "shop front":
        base = np.array([60, 90, 120], np.float32) + shift
        img = np.broadcast_to(base, (H, W, 3)).copy() + noise * 5
        window = ((xx % (24 * SS)) > 3 * SS) & (yy < H * 0.55) & (yy > H * 0.08)
        img[window] = np.array([170, 200, 214], np.float32) + noise[window] * 6
        img[yy >= H * 0.7] = np.array([120, 116, 108], np.float32)
    else:  # station
        t = (yy / H)[..., None]
        img = (1 - t) * (np.array([120, 124, 140], np.float32) + shift) + t * np.array(
            [160, 150, 120], np.float32
        )
        img = img + noise * 5
        pillar = (xx % (40 * SS)) < 6 * SS
        img[pillar] = np.array([200, 200, 196], np.float32)
    return np.clip(img, 0, 255).astype(np.float32)


# ------------------------------------------------------------------------------------------- helpers
def _limb(
    d: ImageDraw.ImageDraw, p0: tuple[float, float], p1: tuple[float, float], width: float, fill: Colour
) -> None:
    d.line([p0, p1], fill=fill, width=max(1, int(round(width))))
    r = width / 2
    for x, y in (p0, p1):
        d.ellipse([x - r, y - r, x + r, y + r], fill=fill)


def _along(p0: tuple[float, float], p1: tuple[float, float], t: float) -> tuple[float, float]:
    return (p0[0] + (p1[0] - p0[0]) * t, p0[1] + (p1[1] - p0[1]) * t)


def _pattern(kind: str, size: tuple[int, int], a: Colour, b: Colour, period: float) -> Image.Image:
    w, h = size
    if kind == "plain":
        return Image.new("RGB", size, a)
    yy, xx = np.mgrid[0:h, 0:w]
    p = max(2.0, period * SS)
    if kind == "horizontal stripes":
        m = (yy % p) < p / 2
    elif kind == "vertical stripes":
        m = (xx % p) < p / 2
    elif kind == "checked":
        m = ((yy // p) + (xx // p)) % 2 == 0
    elif kind == "dotted":
        m = ((yy % p - p / 2) ** 2 + (xx % p - p / 2) ** 2) > (p * 0.28) ** 2
    else:  # two-tone: upper half a, lower half b
        m = yy < h * 0.5
    arr = np.where(m[..., None], np.array(a, np.uint8), np.array(b, np.uint8)).astype(np.uint8)
    return Image.fromarray(arr, "RGB")


# ------------------------------------------------------------------------------------------ the person
def render(spec: Any, height: int, width: int, noise_std: float, blur_scale: float) -> np.ndarray:
    """The image of ``spec`` (an ``ImageSpec``) as ``uint8 [height, width, 3]``; deterministic per spec."""
    row, r = spec.row, spec.render
    ident, outfit, cam = r["identity"], r["outfit"], r["camera"]
    rng = np.random.default_rng(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in spec.seed] + [99]))
    h, w = height * SS, width * SS

    bg = background(row["background"], cam["bg_seed"], cam["bg_hue"], h, w)
    oy, ox = (int(v) for v in rng.integers(0, 16 * SS, size=2))
    canvas = Image.fromarray(bg[oy : oy + h, ox : ox + w].astype(np.uint8), "RGB")
    d = ImageDraw.Draw(canvas)

    frame, _res = SCALES[row["scale"]]
    fig_h = h * frame * ident["height"] * r["size"]
    top = (h - fig_h) * 0.5 + r["dy"] * h + fig_h * 0.01
    cx = w * 0.5 + r["dx"] * w
    direction = row["direction"]
    side = direction in ("left", "right")
    face = {"left": -1.0, "right": 1.0}.get(direction, 0.0)

    head_h = fig_h * ident["head_ratio"]
    head_w = head_h * ident["head_aspect"]
    stoop = ident["stoop"] * fig_h * (face if side else 0.0)
    neck_y = top + head_h * 0.95
    sh_y = top + head_h + fig_h * 0.035
    hip_y = top + fig_h * (1.0 - ident["leg_ratio"])
    foot_y = top + fig_h * 0.985
    side_k = 0.58 if side else 1.0
    sh_w = fig_h * 0.125 * ident["shoulder"] * side_k
    waist_w = fig_h * 0.092 * ident["waist"] * side_k
    hip_w = fig_h * 0.098 * ident["hips"] * side_k * (1.0 if not side else 1.1)
    limb = fig_h * 0.048 * (0.85 + 0.15 * ident["waist"])
    arm_w = limb * 0.82

    skin = _c(ident["skin"])
    hair = _c(ident["hair"])
    top_c, second_c, bottom_c = _c(outfit["top"]), _c(outfit["second"]), _c(outfit["bottom"])
    shoes = _c(outfit["shoes"])
    bag_c = _c(outfit["bag_colour"])
    dark = lambda col, k=0.72: _c(col, k)  # noqa: E731

    stride = STRIDES[row["stride"]] * (0.6 + 0.4 * abs(r["phase"]))
    swing = ARM_SWINGS[row["arm_swing"]] * (0.6 + 0.4 * abs(r["phase"])) * (1 if r["phase"] >= 0 else -1)
    bag = row["bag"]

    # backpack behind the body when seen from the side
    if bag == "backpack" and side:
        bx = cx - face * (sh_w + limb * 0.4)
        d.rounded_rectangle(
            [bx - limb * 1.1, sh_y + 2, bx + limb * 1.1, sh_y + (hip_y - sh_y) * 0.85], radius=4, fill=bag_c
        )

    # legs
    leg_len = foot_y - hip_y
    bottom_type = row["bottom_type"]
    legs = []
    for k, sgn in enumerate((-1.0, 1.0)):
        if side:
            ang = stride * (1 if k == 0 else -1)
            x0 = cx + face * 0.0 + sgn * hip_w * 0.15
        else:
            ang = stride * 0.25 * sgn
            x0 = cx + sgn * hip_w * 0.48
        p0 = (x0, hip_y)
        p1 = (x0 + math.sin(ang) * leg_len, hip_y + math.cos(ang) * leg_len)
        legs.append((p0, p1))
    leg_order = legs if not side else sorted(legs, key=lambda pq: pq[1][0] * face)
    for p0, p1 in leg_order:
        _limb(d, p0, p1, limb, skin)
        if bottom_type == "trousers":
            _limb(d, p0, _along(p0, p1, 0.97), limb * 1.12, bottom_c)
        elif bottom_type == "shorts":
            _limb(d, p0, _along(p0, p1, 0.42), limb * 1.25, bottom_c)
        sx, sy = p1
        toe = face * limb * 0.9 if side else 0.0
        d.ellipse(
            [
                sx - limb * 0.75 + min(toe, 0),
                sy - limb * 0.55,
                sx + limb * 0.75 + max(toe, 0),
                sy + limb * 0.35,
            ],
            fill=shoes,
        )
    if bottom_type == "skirt":
        hem_y = hip_y + leg_len * 0.5
        flare = hip_w * 1.35 + leg_len * 0.12
        d.polygon(
            [
                (cx - hip_w * 1.02, hip_y - 2),
                (cx + hip_w * 1.02, hip_y - 2),
                (cx + flare, hem_y),
                (cx - flare, hem_y),
            ],
            fill=bottom_c,
        )
    elif bottom_type in ("trousers", "shorts"):
        d.polygon(
            [
                (cx - hip_w * 1.05, hip_y - 2),
                (cx + hip_w * 1.05, hip_y - 2),
                (cx + hip_w, hip_y + limb),
                (cx - hip_w, hip_y + limb),
            ],
            fill=bottom_c,
        )

    # torso with the top's pattern
    lean = stoop * 0.5
    torso = [
        (cx - sh_w + lean, sh_y),
        (cx + sh_w + lean, sh_y),
        (cx + waist_w, sh_y + (hip_y - sh_y) * 0.62),
        (cx + hip_w * 1.03, hip_y + limb * 0.3),
        (cx - hip_w * 1.03, hip_y + limb * 0.3),
        (cx - waist_w, sh_y + (hip_y - sh_y) * 0.62),
    ]
    x0 = int(min(p[0] for p in torso)) - 2
    y0 = int(sh_y) - 2
    x1 = int(max(p[0] for p in torso)) + 3
    y1 = int(hip_y + limb * 0.3) + 3
    mask = Image.new("L", (x1 - x0, y1 - y0), 0)
    ImageDraw.Draw(mask).polygon([(x - x0, y - y0) for x, y in torso], fill=255)
    pat = _pattern(row["top_pattern"], mask.size, top_c, second_c, outfit["pattern_period"])
    canvas.paste(pat, (x0, y0), mask)
    if outfit["collar"] and direction == "front":
        d.polygon(
            [(cx - sh_w * 0.35, sh_y), (cx + sh_w * 0.35, sh_y), (cx, sh_y + fig_h * 0.05)],
            fill=dark(top_c, 0.6),
        )
    if bag == "backpack" and direction == "front":
        for sgn in (-1, 1):
            d.line(
                [(cx + sgn * sh_w * 0.55, sh_y), (cx + sgn * sh_w * 0.5, sh_y + (hip_y - sh_y) * 0.6)],
                fill=bag_c,
                width=max(1, int(limb * 0.3)),
            )

    # arms
    arm_len = fig_h * 0.36
    sleeves = row["sleeves"]
    sleeve_t = {"short sleeves": 0.38, "long sleeves": 0.94, "sleeveless": 0.0}[sleeves]
    arms = []
    for k, sgn in enumerate((-1.0, 1.0)):
        if side:
            ang = swing * (1 if k == 0 else -1) * face
            s0 = (cx + lean + sgn * sh_w * 0.3, sh_y + limb * 0.45)
        else:
            ang = sgn * (0.07 + abs(swing) * 0.18)
            s0 = (cx + lean + sgn * (sh_w - arm_w * 0.45), sh_y + limb * 0.45)
        s1 = (
            s0[0] + math.sin(ang) * arm_len,
            s0[1] + math.cos(ang) * arm_len * (1 - 0.1 * abs(swing) * (not side)),
        )
        arms.append((s0, s1))
    if side:  # the far arm first, partly hidden behind the torso
        arms = [arms[0]] if bag != "backpack" else []
    hand_pts = []
    for s0, s1 in arms:
        _limb(d, s0, s1, arm_w, skin)
        if sleeve_t:
            _limb(d, s0, _along(s0, s1, sleeve_t), arm_w * 1.15, top_c)
        d.ellipse(
            [s1[0] - arm_w * 0.62, s1[1] - arm_w * 0.62, s1[0] + arm_w * 0.62, s1[1] + arm_w * 0.62],
            fill=skin,
        )
        hand_pts.append(s1)

    # neck and head
    hx = cx + lean * 1.6 + face * head_w * 0.08
    d.rectangle(
        [hx - head_w * 0.2, neck_y - head_h * 0.2, hx + head_w * 0.2, sh_y + 1], fill=dark(skin, 0.92)
    )
    hb = [hx - head_w / 2, top, hx + head_w / 2, top + head_h]
    radius = int(head_w * 0.5 * (0.35 + ident["head_corner"]))
    d.rounded_rectangle(hb, radius=max(1, min(radius, int(head_w / 2))), fill=skin)
    _hair(d, row["hairstyle"], hb, hair, direction, face, fig_h)
    if direction == "front":
        ey = top + head_h * 0.5
        for sgn in (-1, 1):
            ex = hx + sgn * head_w * 0.2
            d.ellipse([ex - SS, ey - SS * 0.8, ex + SS, ey + SS * 0.8], fill=(35, 28, 26))
        d.line(
            [(hx - head_w * 0.14, top + head_h * 0.76), (hx + head_w * 0.14, top + head_h * 0.76)],
            fill=dark(skin, 0.7),
            width=SS,
        )
    elif side:
        ex = hx + face * head_w * 0.28
        d.ellipse(
            [ex - SS, top + head_h * 0.5 - SS * 0.8, ex + SS, top + head_h * 0.5 + SS * 0.8],
            fill=(35, 28, 26),
        )

    # bags and props in front
    if bag == "backpack" and direction == "back":
        d.rounded_rectangle(
            [cx - sh_w * 0.7, sh_y + limb * 0.4, cx + sh_w * 0.7, sh_y + (hip_y - sh_y) * 0.85],
            radius=6,
            fill=bag_c,
            outline=dark(bag_c),
            width=SS,
        )
    elif bag == "shoulder bag":
        sgn = 1.0 if not side else -face
        bx, by = cx + sgn * hip_w * 1.1, hip_y - limb * 0.2
        d.line(
            [(cx - sgn * sh_w * 0.6, sh_y + 1), (bx, by - limb)],
            fill=dark(bag_c),
            width=max(1, int(limb * 0.25)),
        )
        d.rounded_rectangle(
            [bx - limb * 1.0, by - limb, bx + limb * 1.0, by + limb * 0.9], radius=3, fill=bag_c
        )
    elif bag == "handbag" and hand_pts:
        px, py = hand_pts[-1]
        d.rounded_rectangle(
            [px - limb * 0.9, py + arm_w * 0.3, px + limb * 0.9, py + limb * 1.9], radius=3, fill=bag_c
        )
    _prop(d, row["prop"], hand_pts, top, head_h, hx, fig_h)

    # the camera
    img = canvas.resize((width, height), Image.BOX)
    _scale_frac, res = SCALES[row["scale"]]
    if res < 1.0:
        small = (max(8, int(width * res)), max(16, int(height * res)))
        img = img.resize(small, Image.BILINEAR).resize((width, height), Image.BILINEAR)
    radius = BLURS[row["blur"]] * blur_scale
    if radius > 0:
        img = img.filter(ImageFilter.GaussianBlur(radius))
    arr = np.asarray(img, dtype=np.float32)
    gain = (
        np.array(LIGHTINGS[row["lighting"]], np.float32)
        * (1.0 + np.array(cam["tint"], np.float32))
        * r["light"]
    )
    arr = arr * gain
    if noise_std > 0:
        arr = arr + rng.normal(0.0, noise_std, size=arr.shape).astype(np.float32)
    return np.clip(np.rint(arr), 0, 255).astype(np.uint8)


def _hair(
    d: ImageDraw.ImageDraw,
    style: str,
    hb: list[float],
    hair: Colour,
    direction: str,
    face: float,
    fig_h: float,
) -> None:
    x0, y0, x1, y1 = hb
    hw, hh = x1 - x0, y1 - y0
    cx = (x0 + x1) / 2
    back = direction == "back"
    if style == "bald":
        if back or face:
            d.chord(
                [x0, y0 + hh * 0.35, x1, y1 + hh * 0.3],
                200 if face >= 0 else -20,
                340 if face >= 0 else 160,
                fill=hair,
            )
        return
    if style == "buzz cut":
        d.chord([x0 - 1, y0 - 1, x1 + 1, y0 + hh * 0.7], 180, 360, fill=hair)
        if back:
            d.ellipse([x0, y0, x1, y1 - hh * 0.1], fill=hair)
        return
    cap = [x0 - hw * 0.08, y0 - hh * 0.1, x1 + hw * 0.08, y0 + hh * 0.85]
    d.chord(cap, 170, 370, fill=hair)
    if back:
        d.ellipse([x0 - hw * 0.05, y0 - hh * 0.08, x1 + hw * 0.05, y1], fill=hair)
    elif face:
        bx = x0 if face > 0 else x1 - hw * 0.55
        d.rectangle([bx, y0 + hh * 0.2, bx + hw * 0.55, y0 + hh * 0.7], fill=hair)
    if style == "long":
        d.rectangle([x0 - hw * 0.1, y0 + hh * 0.35, x0 + hw * 0.14, y1 + hh * 0.9], fill=hair)
        d.rectangle([x1 - hw * 0.14, y0 + hh * 0.35, x1 + hw * 0.1, y1 + hh * 0.9], fill=hair)
        if back:
            d.rectangle([x0 - hw * 0.1, y0 + hh * 0.4, x1 + hw * 0.1, y1 + hh * 0.9], fill=hair)
    elif style == "bob":
        d.rectangle([x0 - hw * 0.12, y0 + hh * 0.3, x0 + hw * 0.16, y1 + hh * 0.05], fill=hair)
        d.rectangle([x1 - hw * 0.16, y0 + hh * 0.3, x1 + hw * 0.12, y1 + hh * 0.05], fill=hair)
        if back:
            d.rectangle([x0 - hw * 0.12, y0 + hh * 0.3, x1 + hw * 0.12, y1 + hh * 0.05], fill=hair)
    elif style == "ponytail":
        tx = cx - face * hw * 0.6 if face else cx
        d.ellipse([tx - hw * 0.22, y0 + hh * 0.3, tx + hw * 0.22, y1 + hh * 0.6], fill=hair)
    elif style == "bun":
        bx = cx - face * hw * 0.35
        d.ellipse([bx - hw * 0.3, y0 - hh * 0.35, bx + hw * 0.3, y0 + hh * 0.2], fill=hair)
    elif style == "curly":
        r = hw * 0.22
        for k in range(7):
            a = math.pi * (0.95 + k / 6 * 1.1)
            px, py = cx + math.cos(a) * hw * 0.55, y0 + hh * 0.45 + math.sin(a) * hh * 0.55
            d.ellipse([px - r, py - r, px + r, py + r], fill=hair)


def _prop(
    d: ImageDraw.ImageDraw,
    prop: str,
    hands: list[tuple[float, float]],
    top: float,
    head_h: float,
    hx: float,
    fig_h: float,
) -> None:
    if prop == "none" or not hands:
        return
    px, py = hands[0]
    u = fig_h * 0.03
    if prop == "phone":
        d.rectangle([px - u * 0.6, py - u * 1.8, px + u * 0.6, py], fill=(20, 20, 24), outline=(90, 90, 100))
    elif prop == "cup":
        d.rectangle([px - u * 0.8, py - u * 1.6, px + u * 0.8, py + u * 0.2], fill=(238, 236, 228))
        d.rectangle([px - u * 0.8, py - u * 1.0, px + u * 0.8, py - u * 0.5], fill=(120, 70, 40))
    elif prop == "umbrella":
        tip_y = top - head_h * 0.4
        d.line([(px, py), (px, tip_y)], fill=(40, 40, 40), width=max(1, int(u * 0.4)))
        d.chord(
            [px - fig_h * 0.2, tip_y - fig_h * 0.1, px + fig_h * 0.2, tip_y + fig_h * 0.1],
            180,
            360,
            fill=CLOTH_COLOURS["navy"],
        )
    elif prop == "book":
        d.rectangle(
            [px - u * 1.3, py - u * 1.8, px + u * 1.3, py + u * 0.4],
            fill=(170, 40, 40),
            outline=(240, 230, 210),
        )

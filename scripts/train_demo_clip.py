"""Train the two bundled demo checkpoints, ``demo-early`` and ``demo-final``, on 2 CPU cores.

    .venv/bin/python scripts/train_demo_clip.py            # about 7 minutes on 2 cores

The model is ``evalbench/assets/demo-clip.json`` (open_clip), trained from scratch with open_clip's
own contrastive loss on synthetic captioned images. None of them is an evaluation image:

* digits drawn here, from the system's TrueType fonts (``/usr/share/fonts``, plus matplotlib's
  bundled fonts when installed) and from hand-written stroke skeletons, with random thickness,
  slant, aspect, position and elastic jitter, then degraded the way UCI/sklearn's 8x8 digits were
  made (32x32 binary bitmap, ink pixels counted per 4x4 block, giving 0..16) and upsampled by the
  model's own preprocessing. scikit-learn's digits are never read.
* coloured shapes from :func:`evalbench.sources.generated.render_shape`, drawn from seeds that no
  task uses (the tasks use seeds 0 and 1; training uses ``SEED + 1000``).

Writes ``demo-early.safetensors`` (after ``--early-steps``) and ``demo-final.safetensors`` next to
the config: the float16 ``state_dict()`` of ``open_clip.create_model('demo-clip')``.
"""

from __future__ import annotations

import argparse
import glob
import math
import time
from pathlib import Path

import numpy as np
import open_clip
import torch
from PIL import Image, ImageDraw, ImageFilter, ImageFont
from safetensors.torch import save_file
from scipy.ndimage import gaussian_filter, map_coordinates

from evalbench.sources.generated import COLORS, DIGIT_NAMES, SHAPES, digit_levels_to_image, render_shape

ASSETS = Path(__file__).resolve().parent.parent / "evalbench" / "assets"
SEED = 0

DIGIT_TEMPLATES = [
    "a photo of the number {c}.",
    "a handwritten digit {c}.",
    "the digit {c}.",
    "a picture of the number {c}.",
    "a blurry low resolution image of the digit {c}.",
    "the number {c}, written by hand.",
    "a scan of a handwritten {c}.",
    "{c}.",
]
SHAPE_TEMPLATES = ["a photo of a {s}.", "a drawing of a {s}.", "a {s} shape.", "a small picture of a {s}.", "a {s}."]
COLOR_TEMPLATES = ["a photo of something {k}.", "a {k} shape.", "a drawing in {k}.", "the colour {k}.", "something {k}."]
BOTH_TEMPLATES = ["a {k} {s}.", "a photo of a {k} {s}.", "a drawing of a {s} in {k}.", "a {s} coloured {k}.", "a small {k} {s}."]


# ---------------------------------------------------------------------------------------------
# digits

def arc(cx, cy, rx, ry, a0, a1, n=16):
    """Points on an ellipse from angle a0 to a1 (degrees; y grows downwards, 90 is the bottom)."""
    return [(cx + rx * math.cos(math.radians(a)), cy + ry * math.sin(math.radians(a))) for a in np.linspace(a0, a1, n)]


# Stroke skeletons on the unit box (y down); several variants per digit, each a list of polylines.
STROKES: dict[int, list[list[list[tuple[float, float]]]]] = {
    0: [[arc(0.5, 0.5, 0.42, 0.49, -90, 270, 24)], [arc(0.5, 0.5, 0.3, 0.49, -100, 265, 24)]],
    1: [[[(0.5, 0.0), (0.5, 1.0)]], [[(0.2, 0.25), (0.55, 0.0), (0.55, 1.0)]],
        [[(0.25, 0.2), (0.55, 0.0), (0.55, 1.0)], [(0.25, 1.0), (0.85, 1.0)]], [[(0.6, 0.0), (0.4, 1.0)]]],
    2: [[arc(0.5, 0.3, 0.38, 0.29, 190, 400) + [(0.08, 1.0), (0.95, 1.0)]],
        [arc(0.48, 0.28, 0.36, 0.27, 200, 380) + [(0.15, 0.85), (0.1, 1.0), (0.95, 0.95)]],
        [arc(0.5, 0.3, 0.38, 0.29, 190, 400) + [(0.1, 0.98)] + arc(0.3, 0.9, 0.2, 0.1, 180, 90, 5) + [(0.95, 1.0)]]],
    3: [[arc(0.5, 0.26, 0.36, 0.25, 200, 450) + arc(0.5, 0.75, 0.4, 0.25, 270, 520)],
        [[(0.1, 0.0), (0.9, 0.0), (0.45, 0.42)] + arc(0.5, 0.7, 0.4, 0.3, 260, 520)]],
    4: [[[(0.65, 0.0), (0.05, 0.68), (0.95, 0.68)], [(0.68, 0.3), (0.68, 1.0)]],
        [[(0.2, 0.0), (0.1, 0.6), (0.92, 0.6)], [(0.72, 0.15), (0.72, 1.0)]],
        [[(0.3, 0.0), (0.05, 0.55), (0.95, 0.5)], [(0.7, 0.0), (0.6, 1.0)]]],
    5: [[[(0.88, 0.0), (0.25, 0.0), (0.18, 0.45)], arc(0.48, 0.7, 0.4, 0.3, 215, 520)],
        [[(0.22, 0.0), (0.18, 0.45)], [(0.22, 0.0), (0.9, 0.02)], arc(0.5, 0.7, 0.38, 0.3, 210, 510)]],
    6: [[[(0.8, 0.0), (0.45, 0.15), (0.15, 0.55)] + arc(0.5, 0.72, 0.35, 0.28, 180, 540)],
        [arc(0.75, 0.6, 0.6, 0.6, 250, 180, 8) + arc(0.5, 0.75, 0.35, 0.25, 180, 540)]],
    7: [[[(0.05, 0.0), (0.95, 0.0), (0.4, 1.0)]], [[(0.05, 0.0), (0.95, 0.0), (0.4, 1.0)], [(0.3, 0.5), (0.85, 0.5)]],
        [[(0.05, 0.15), (0.1, 0.0), (0.95, 0.0), (0.55, 0.55), (0.5, 1.0)]]],
    8: [[arc(0.5, 0.25, 0.32, 0.25, 0, 360), arc(0.5, 0.74, 0.4, 0.26, -90, 270)],
        [arc(0.5, 0.25, 0.32, 0.25, 30, 330) + arc(0.5, 0.74, 0.4, 0.26, -90, 270)]],
    9: [[arc(0.5, 0.3, 0.38, 0.3, 0, 360), [(0.88, 0.3), (0.82, 1.0)]],
        [arc(0.5, 0.3, 0.38, 0.3, 0, 360), [(0.88, 0.3), (0.75, 0.8), (0.4, 1.0)]],
        [arc(0.55, 0.28, 0.35, 0.28, 0, 360), [(0.9, 0.28), (0.5, 1.0)]]],
}

CANVAS = 64  # digits are drawn at 2x the 32x32 bitmap, then reduced


def font_paths() -> list[str]:
    paths = sorted(glob.glob("/usr/share/fonts/**/*.ttf", recursive=True))
    try:
        import matplotlib

        ttf = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
        paths += sorted(str(p) for p in ttf.glob("*.ttf") if p.name.startswith(("STIXGeneral", "cmr", "cmss", "cmtt", "cmb", "cmti")))
    except ImportError:
        pass
    return paths


def fit_to_box(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Crop the ink's bounding box and scale it into the 32x32 frame (at CANVAS resolution)."""
    ys, xs = np.nonzero(mask > 127)
    if len(ys) == 0:
        return np.zeros((CANVAS, CANVAS), np.float32)
    crop = Image.fromarray(mask[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1])
    h = CANVAS * rng.uniform(0.82, 1.0)
    aspect = crop.width / crop.height * rng.uniform(0.85, 1.5)
    w = min(CANVAS * 0.98, max(CANVAS * 0.12, h * aspect))
    crop = crop.resize((max(1, round(w)), max(1, round(h))), Image.BILINEAR)
    out = Image.new("L", (CANVAS, CANVAS), 0)
    dx = (CANVAS - crop.width) / 2 + rng.normal(0, 1.5)
    dy = (CANVAS - crop.height) / 2 + rng.normal(0, 1.5)
    out.paste(crop, (int(round(min(max(dx, 0), CANVAS - crop.width))), int(round(min(max(dy, 0), CANVAS - crop.height)))))
    return np.asarray(out, np.float32)


def elastic(mask: np.ndarray, rng: np.random.Generator, alpha: float, sigma: float) -> np.ndarray:
    dx = gaussian_filter(rng.uniform(-1, 1, mask.shape), sigma) * alpha
    dy = gaussian_filter(rng.uniform(-1, 1, mask.shape), sigma) * alpha
    yy, xx = np.meshgrid(np.arange(mask.shape[0]), np.arange(mask.shape[1]), indexing="ij")
    return map_coordinates(mask, [yy + dy, xx + dx], order=1, mode="constant")


def shear_rotate(points: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    a = math.radians(rng.normal(0, 8))
    s = rng.normal(0, 0.2)
    m = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]]) @ np.array([[1, -s], [0, 1]])
    return points @ m.T


def draw_font_digit(digit: int, font: ImageFont.FreeTypeFont, rng: np.random.Generator) -> np.ndarray:
    img = Image.new("L", (160, 160), 0)
    ImageDraw.Draw(img).text((80, 80), str(digit), fill=255, font=font, anchor="mm")
    s, a = rng.normal(0, 0.2), rng.normal(0, 6)
    img = img.transform(img.size, Image.AFFINE, (1, s, -s * 80, 0, 1, 0), Image.BILINEAR).rotate(a, Image.BILINEAR)
    mask = Image.fromarray(fit_to_box(np.asarray(img), rng).astype(np.uint8))
    k = int(rng.choice([0, 3, 3, 5]))  # thicken at the 2x frame: +1 or +2 px of the 32x32 bitmap
    return np.asarray(mask.filter(ImageFilter.MaxFilter(k)) if k else mask, np.float32)


def draw_stroke_digit(digit: int, rng: np.random.Generator) -> np.ndarray:
    variant = STROKES[digit][rng.integers(len(STROKES[digit]))]
    big = 256
    img = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(img)
    width = int(rng.uniform(20, 46))
    for stroke in variant:
        pts = np.asarray(stroke, np.float64) - 0.5
        pts = pts + rng.normal(0, 0.025, pts.shape)
        pts = shear_rotate(pts, rng) * big * 0.6 + big / 2
        pts = [tuple(p) for p in pts]
        draw.line(pts, fill=255, width=width, joint="curve")
        for p in (pts[0], pts[-1]):
            draw.ellipse([p[0] - width / 2, p[1] - width / 2, p[0] + width / 2, p[1] + width / 2], fill=255)
    return fit_to_box(np.asarray(img), rng)


def degrade(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """CANVAS-px ink mask -> 8x8 ink counts 0..16, the way the UCI digits were made."""
    if rng.uniform() < 0.7:
        mask = elastic(mask, rng, alpha=rng.uniform(20, 60), sigma=rng.uniform(5, 8))
    if rng.uniform() < 0.5:
        mask = gaussian_filter(mask, rng.uniform(0.5, 1.5))
    small = Image.fromarray(mask.clip(0, 255).astype(np.uint8)).resize((32, 32), Image.BILINEAR)
    bits = np.asarray(small) > rng.uniform(90, 160)
    return bits.reshape(8, 4, 8, 4).sum(axis=(1, 3))


def make_digits(n: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray]:
    """n digit images (uint8 greyscale, size x size, upsampled like the eval set) and labels."""
    fonts = [ImageFont.truetype(p, 110) for p in font_paths()]
    images = np.empty((n, size, size), np.uint8)
    labels = np.arange(n) % 10
    for i in range(n):
        d = int(labels[i])
        if rng.uniform() < 0.5:
            mask = draw_font_digit(d, fonts[rng.integers(len(fonts))], rng)
        else:
            mask = draw_stroke_digit(d, rng)
        img = digit_levels_to_image(degrade(mask, rng)).convert("RGB")
        images[i] = np.asarray(img.resize((size, size), Image.BICUBIC))[:, :, 0]
    return images, labels


def make_shapes(n: int, rng: np.random.Generator, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    shapes, colors = list(SHAPES), list(COLORS)
    images = np.empty((n, size, size, 3), np.uint8)
    s_idx = rng.integers(len(shapes), size=n)
    k_idx = rng.integers(len(colors), size=n)
    for i in range(n):
        images[i] = np.asarray(render_shape(rng, shapes[s_idx[i]], colors[k_idx[i]], size))
    return images, s_idx, k_idx


# ---------------------------------------------------------------------------------------------
# training


def caption_bank(tokenizer) -> dict[str, torch.Tensor]:
    """All captions, tokenised once: digits [10, T]; shapes [6, 6, 3 kinds x T]."""
    digit = tokenizer([t.format(c=c) for c in DIGIT_NAMES for t in DIGIT_TEMPLATES])
    shape_caps = []
    for s in SHAPES:
        for k in COLORS:
            shape_caps += [t.format(s=s) for t in SHAPE_TEMPLATES]
            shape_caps += [t.format(k=k) for t in COLOR_TEMPLATES]
            shape_caps += [t.format(s=s, k=k) for t in BOTH_TEMPLATES]
    return {
        "digit": digit.view(10, len(DIGIT_TEMPLATES), -1),
        "shape": tokenizer(shape_caps).view(len(SHAPES), len(COLORS), 3, 5, -1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--early-steps", type=int, default=60)
    parser.add_argument("--batch-size", type=int, default=192)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--n-digits", type=int, default=24000)
    parser.add_argument("--n-shapes", type=int, default=12000)
    parser.add_argument("--digit-fraction", type=float, default=0.5)
    parser.add_argument("--one-colour-fraction", type=float, default=0.5,
                        help="share of steps whose shapes all have one colour, so only shape can match captions")
    parser.add_argument("--save-every", type=int, default=250, help="also write demo-final every N steps")
    parser.add_argument("--out", type=Path, default=ASSETS)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the model card's times use 2)")
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    rng = np.random.default_rng(SEED + 1000)
    t0 = time.time()

    open_clip.add_model_config(ASSETS / "demo-clip.json")
    model = open_clip.create_model("demo-clip")
    tokenizer = open_clip.get_tokenizer("demo-clip")
    size = model.visual.image_size[0] if isinstance(model.visual.image_size, tuple) else model.visual.image_size
    mean = torch.tensor(model.visual.image_mean or open_clip.OPENAI_DATASET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(model.visual.image_std or open_clip.OPENAI_DATASET_STD).view(1, 3, 1, 1)
    n_params = sum(p.numel() for p in model.parameters())
    print(f"demo-clip: {n_params / 1e6:.2f}M parameters, {size}px input", flush=True)

    digit_img, digit_lab = make_digits(args.n_digits, rng, size)
    print(f"{args.n_digits} digits drawn in {time.time() - t0:.0f}s", flush=True)
    shape_img, shape_s, shape_k = make_shapes(args.n_shapes, rng, size)
    print(f"{args.n_shapes} shapes drawn in {time.time() - t0:.0f}s", flush=True)
    bank = caption_bank(tokenizer)
    colour_pools = [torch.from_numpy(np.flatnonzero(shape_k == k)) for k in range(len(COLORS))]

    loss_fn = open_clip.ClipLoss()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "embedding" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "embedding" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=args.lr, betas=(0.9, 0.98), eps=1e-6)
    warmup = max(1, args.steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return args.lr * (step + 1) / warmup
        return args.lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / (args.steps - warmup)))

    g = torch.Generator().manual_seed(SEED)
    n_d = round(args.batch_size * args.digit_fraction)
    n_s = args.batch_size - n_d
    t_train = time.time()
    model.train()
    for step in range(args.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step)
        di = torch.randint(len(digit_lab), (n_d,), generator=g)
        # Colour is the easy cue: in some steps every shape has one colour, and the captions name
        # only the shape, so the model must learn shape to match them.
        one_colour = torch.rand(1, generator=g).item() < args.one_colour_fraction
        if one_colour:
            pool = colour_pools[int(torch.randint(len(COLORS), (1,), generator=g))]
            si = pool[torch.randint(len(pool), (n_s,), generator=g)]
        else:
            si = torch.randint(len(shape_s), (n_s,), generator=g)
        d_img = torch.from_numpy(digit_img[di.numpy()]).unsqueeze(1).expand(-1, 3, -1, -1)
        s_img = torch.from_numpy(shape_img[si.numpy()]).permute(0, 3, 1, 2)
        images = (torch.cat([d_img, s_img]).float() / 255 - mean) / std
        d_txt = bank["digit"][torch.from_numpy(digit_lab[di.numpy()]), torch.randint(len(DIGIT_TEMPLATES), (n_d,), generator=g)]
        kind_p = torch.tensor([1.0, 0.0, 0.0]) if one_colour else torch.tensor([0.4, 0.2, 0.4])
        kind = torch.multinomial(kind_p, n_s, replacement=True, generator=g)
        s_txt = bank["shape"][torch.from_numpy(shape_s[si.numpy()]), torch.from_numpy(shape_k[si.numpy()]), kind,
                              torch.randint(5, (n_s,), generator=g)]
        texts = torch.cat([d_txt, s_txt])
        img_f, txt_f, scale = model(images, texts)[:3]
        loss = loss_fn(img_f, txt_f, scale)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        if step % 50 == 0 or step == args.steps - 1:
            print(f"step {step:5d}  loss {loss.item():.3f}  scale {scale.item():.1f}  {time.time() - t_train:.0f}s", flush=True)
        if step + 1 == args.early_steps:
            save(model, args.out / "demo-early.safetensors")
        if (step + 1) % args.save_every == 0:
            save(model, args.out / "demo-final.safetensors")
    save(model, args.out / "demo-final.safetensors")
    print(f"training {time.time() - t_train:.0f}s, total {time.time() - t0:.0f}s", flush=True)


def save(model: torch.nn.Module, path: Path) -> None:
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path))
    print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB)", flush=True)


if __name__ == "__main__":
    main()

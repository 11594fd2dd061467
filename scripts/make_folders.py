"""Two small image folders of natural photographs, built offline, for `dataset=folder`.

They stand in for a user's own small folder (issue 22), and are built only from images
that ship inside packages this project already installs, so anyone can rebuild them
bit for bit without a download:

- `photos`: RGB crops of eight photographs (scikit-image's astronaut, coffee, chelsea,
  rocket, motorcycle and Hubble deep field; scikit-learn's china and flower), one class
  per photograph. Each crop is a random square covering 15-40% of the photograph's
  shorter side, resized with antialiasing to `--photos-resolution` (default 8 px).
- `faces`: scikit-image's subset of Labeled Faces in the Wild, 100 faces and 100
  non-face background patches (25 x 25 greyscale), as two classes, resized to
  `--faces-resolution` (default 8 px). Greyscale: run it with `dataset.channels=1`.

  python scripts/make_folders.py --out folders
  python -m mucs_pipeline dataset=folder dataset.root=folders/photos dataset.resolution=8
  python -m mucs_pipeline dataset=folder dataset.root=folders/faces dataset.resolution=8 \
      dataset.channels=1

Files are PNGs named `<class>/<index>.png`; the same `--seed` gives the same bytes.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import skimage.data
from PIL import Image
from sklearn.datasets import load_sample_images

CROP_SIDE = (0.15, 0.40)  # a crop's side, as a fraction of the photograph's shorter side


def photographs() -> dict[str, np.ndarray]:
    """The eight source photographs, (H, W, 3) uint8, by class name."""
    d = skimage.data
    sources = dict(astronaut=d.astronaut(), coffee=d.coffee(), chelsea=d.chelsea())
    sources.update(rocket=d.rocket(), motorcycle=d.stereo_motorcycle()[0])
    sources.update(hubble=d.hubble_deep_field())
    china, flower = load_sample_images().images
    sources.update(china=china, flower=flower)
    return dict(sorted(sources.items()))


def random_crops(photo: np.ndarray, count: int, resolution: int, rng: np.random.Generator):
    """`count` square crops at random places and sizes, each resized to `resolution`."""
    height, width = photo.shape[:2]
    shorter = min(height, width)
    for _ in range(count):
        side = int(rng.uniform(*CROP_SIDE) * shorter)
        top = int(rng.integers(0, height - side + 1))
        left = int(rng.integers(0, width - side + 1))
        crop = Image.fromarray(photo[top : top + side, left : left + side])
        yield crop.resize((resolution, resolution), Image.Resampling.LANCZOS)


def make_photos(out: Path, per_class: int, resolution: int, seed: int) -> int:
    rng = np.random.default_rng(seed)
    total = 0
    for name, photo in photographs().items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for i, crop in enumerate(random_crops(photo, per_class, resolution, rng)):
            crop.save(out / name / f"{i:04d}.png")
            total += 1
    return total


def make_faces(out: Path, resolution: int) -> int:
    # 200 x 25 x 25 in [0, 1], read from the package's own file (no download)
    images = np.load(Path(skimage.data.__file__).parent / "lfw_subset.npy")
    for i, image in enumerate(images):
        name = "face" if i < 100 else "background"  # the first 100 are faces (skimage's docs)
        (out / name).mkdir(parents=True, exist_ok=True)
        grey = Image.fromarray(np.round(image * 255).astype(np.uint8))
        grey = grey.resize((resolution, resolution), Image.Resampling.LANCZOS)
        grey.save(out / name / f"{i:04d}.png")
    return len(images)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("folders"), help="photos/, faces/ go here")
    parser.add_argument("--per-class", type=int, default=75, help="crops per photograph")
    parser.add_argument("--photos-resolution", type=int, default=8)
    parser.add_argument("--faces-resolution", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0, help="seed of the crops' places and sizes")
    args = parser.parse_args(argv)
    for sub in ("photos", "faces"):
        if (args.out / sub).exists() and any((args.out / sub).iterdir()):
            parser.error(f"{args.out / sub} is not empty: choose another --out or remove it")
    n = make_photos(args.out / "photos", args.per_class, args.photos_resolution, args.seed)
    print(f"{args.out / 'photos'}: {n} RGB images of {args.photos_resolution} px, 8 classes")
    n = make_faces(args.out / "faces", args.faces_resolution)
    print(f"{args.out / 'faces'}: {n} greyscale images of {args.faces_resolution} px, 2 classes")


if __name__ == "__main__":
    main()

"""Camera frames for simulated check-ins, from real photographs (`tests/data/faces/`).

The enrolled person of every simulated case is the one photographed in `obama_*.jpg`;
an impostor is the one in `biden_*.jpg`. Each honest check-in is a fresh capture: every
frame is a random crop (3 to 10 % off two sides) of the photo, so its perceptual hash
differs from earlier check-ins' as a new camera frame would. Gestures these photos can
show: `turn_left` (portrait → briefing), `turn_right` (portrait → podium), `smile`
(briefing → portrait); there is no photo with closed eyes, so `blink` cannot be shown
(the demo's service asks only the three others).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from devices.faces.images import decode, encode_jpeg

FACES = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"
ENROLMENT = ("obama_portrait", "obama_briefing")
GESTURES = {
    "turn_left": ("obama_portrait", "obama_briefing", "obama_portrait"),
    "turn_right": ("obama_portrait", "obama_podium", "obama_portrait"),
    "smile": ("obama_briefing", "obama_portrait", "obama_briefing"),
}
IMPOSTOR = ("biden_portrait", "biden_portrait_2021", "biden_portrait")
SHOWABLE = tuple(GESTURES)


def photo(name: str) -> bytes:
    return (FACES / f"{name}.jpg").read_bytes()


class Frames:
    """Frame sets for check-ins (JPEG bytes), decoded photos cached."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self._rgb = {n: decode(photo(n))[0] for n in
                     {*ENROLMENT, *IMPOSTOR, *(x for g in GESTURES.values() for x in g)}}

    def _capture(self, name: str) -> bytes:
        rgb = self._rgb[name]
        h, w = rgb.shape[:2]
        dy, dx = (int(v * f) for v, f in zip((h, w), self.rng.uniform(0.03, 0.10, 2),
                                             strict=True))
        top, left = (int(self.rng.integers(0, 2)) for _ in range(2))
        crop = rgb[dy * top:h - dy * (1 - top), dx * left:w - dx * (1 - left)]
        return encode_jpeg(np.ascontiguousarray(crop))

    def honest(self, challenge: str | None) -> list[bytes] | None:
        """The enrolled person performing `challenge` (None: these photos cannot show it)."""
        names = GESTURES.get(challenge or "turn_left")
        return None if names is None else [self._capture(n) for n in names]

    def impostor(self) -> list[bytes]:
        return [self._capture(n) for n in IMPOSTOR]

    def still(self) -> list[bytes]:
        """The enrolled person's photo held still: no gesture."""
        return [self._capture("obama_portrait")] * 3

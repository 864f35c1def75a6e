"""`probation bench biometrics`: error rates, challenge and replay detection, timings.

Data: a directory of real face photographs (see README "Biometrics" for the sources and
licences), laid out as
- `<data>/yale/NN_<condition>.png`: the Yale Face Database (15 people x 10 conditions,
  among them `normal`, `happy`, `sleepy`, `wink`);
- `<data>/fr/*.jpg|png`: the example photos of the face_recognition project, identity
  from the file name;
- without `fr/`, the photos committed under `tests/data/faces/` (crops of six of those).

Near-identical files (the same photo at several resolutions) are kept once (pHash).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import statistics
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from devices.faces import analysis as A
from devices.faces.images import decode, encode_jpeg
from devices.faces.model import DetectedFace, FaceModel, face_model
from devices.faces.verify import assess_photo, verify_checkin

REPO_FACES = Path(__file__).resolve().parents[1] / "tests" / "data" / "faces"

DUPLICATE_BITS = 3  # pHash distance of copies of one photo (resized, re-encoded)

# face_recognition's example files -> identity (files of people not listed are skipped)
FR_IDENTITIES = {
    "obama": "obama", "biden": "biden", "alex": "alex_lacamoire", "lacamoire": "alex_lacamoire",
    "john": "kit_harington", "johnsnow": "kit_harington", "rose": "rose_leslie",
    "lin-manuel": "lin_manuel_miranda",
}


@dataclass(slots=True)
class Photo:
    identity: str
    name: str
    condition: str
    rgb: npt.NDArray[np.uint8]
    face: DetectedFace | None = None
    faces: int = 0
    embedding: npt.NDArray[np.float32] | None = None


def _fr_identity(name: str) -> str | None:
    stem = name.lower()
    if "two_people" in stem or "and_" in stem or "kit_with_rose" in stem or "partial" in stem:
        return None
    for k, v in FR_IDENTITIES.items():
        if k in stem:
            return v
    return None


def load_photos(data: Path | None) -> tuple[list[Photo], list[str]]:
    """The photos with one identity each, and the names of the copies left out (the same
    photo at another resolution or format, or a file the data set substituted)."""
    found: list[tuple[str, str, str, Path]] = []
    if data is not None and (data / "yale").is_dir():
        # `normal` first: where the data set substituted a file by another, keep `normal`
        for p in sorted((data / "yale").iterdir(), key=lambda p: ("normal" not in p.name, p.name)):
            m = re.fullmatch(r"(\d+)_(\w+)\.\w+", p.name)
            if m:
                found.append((f"yale{m[1]}", p.name, m[2], p))
    # the committed photos are crops of face_recognition's: use them only without those
    fr = data / "fr" if data is not None else None
    for d in [fr] if fr is not None and fr.is_dir() else [REPO_FACES]:
        if not d.is_dir():
            continue
        for p in sorted(d.iterdir()):
            ident = _fr_identity(p.name) if p.suffix.lower() in (".jpg", ".jpeg", ".png") else None
            if ident:
                found.append((ident, p.name, "photo", p))
    photos: list[Photo] = []
    kept_hashes: list[int] = []
    skipped: list[str] = []
    for ident, name, cond, path in found:
        with Image.open(path) as im:  # the Yale files are GIFs: any format Pillow reads
            rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
        h = A.phash(A.to_gray(rgb))
        if any(A.hamming(h, k) <= DUPLICATE_BITS for k in kept_hashes):
            skipped.append(name)
            continue
        kept_hashes.append(h)
        photos.append(Photo(ident, name, cond, _shrink(rgb)))
    return photos, skipped


def _shrink(rgb: npt.NDArray[np.uint8], side: int = 640) -> npt.NDArray[np.uint8]:
    """Photos as a phone would send them: at most 640 px, JPEG-encoded within 64 KiB."""
    rgb2, _ = decode(encode_jpeg(rgb, max_side=side))
    return rgb2


def analyse(photos: Sequence[Photo], model: FaceModel) -> None:
    for p in photos:
        faces = model.detect(p.rgb)
        p.faces = len(faces)
        if len(faces) == 1:
            p.face = faces[0]
            p.embedding = model.embed(p.rgb, faces[0])


# ----------------------------------------------------------------------- error rates


def pair_scores(photos: Sequence[Photo]) -> tuple[list[float], list[float]]:
    """Cosine similarities of all genuine and all impostor pairs of single photos."""
    ok = [p for p in photos if p.embedding is not None]
    genuine: list[float] = []
    impostor: list[float] = []
    for a, b in itertools.combinations(ok, 2):
        s = A.cosine(a.embedding, b.embedding)  # type: ignore[arg-type]
        (genuine if a.identity == b.identity else impostor).append(s)
    return genuine, impostor


ENROL_FIRST = ("normal", "noglasses", "glasses")


def template_scores(photos: Sequence[Photo], n_enrol: int = 3) -> tuple[list[float], list[float]]:
    """What the service does: a template from up to `n_enrol` photos per person (the mean
    of their embeddings; Yale's `normal`, `noglasses`, `glasses` first), every other photo a
    probe: against its own template (genuine) and every other person's (impostor)."""
    by_id: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        if p.embedding is not None:
            by_id[p.identity].append(p)
    templates: dict[str, npt.NDArray[np.float32]] = {}
    probes: list[Photo] = []
    for ident, ps in by_id.items():
        if len(ps) < 2:
            continue
        ps = sorted(ps, key=lambda p: (p.condition not in ENROL_FIRST,
                                       ENROL_FIRST.index(p.condition)
                                       if p.condition in ENROL_FIRST else 0, p.name))
        k = min(n_enrol, len(ps) - 1)
        templates[ident] = A.template_of([p.embedding for p in ps[:k]])  # type: ignore[misc]
        probes.extend(ps[k:])
    genuine: list[float] = []
    impostor: list[float] = []
    for p in probes:
        for ident, t in templates.items():
            s = A.cosine(t, p.embedding)  # type: ignore[arg-type]
            (genuine if ident == p.identity else impostor).append(s)
    return genuine, impostor


def rates(genuine: Sequence[float], impostor: Sequence[float], t: float) -> dict[str, float]:
    g = np.asarray(genuine)
    i = np.asarray(impostor)
    return {
        "threshold": round(t, 3),
        "far": float(np.mean(i >= t)) if i.size else float("nan"),
        "frr": float(np.mean(g < t)) if g.size else float("nan"),
    }


def choose_threshold(genuine: Sequence[float], impostor: Sequence[float],
                     max_far: float = 0.001) -> float:
    """The lowest threshold (0.005 steps) whose false accept rate is at most `max_far`:
    a false accept lets someone else check in for the person, so it is capped first."""
    for t in np.arange(0.80, 1.0, 0.005):
        if rates(genuine, impostor, float(t))["far"] <= max_far:
            return round(float(t), 3)
    return 1.0


# ----------------------------------------------------------------------- challenges


def _lm(p: Photo) -> A.Points:
    assert p.face is not None
    return p.face.landmarks


def _mirror(p: A.Points, width: int) -> A.Points:
    """Landmarks of the mirrored photo (x flipped, left/right points swapped)."""
    order = (list(range(16, -1, -1)) + list(range(26, 16, -1)) + list(range(27, 31))
             + list(range(35, 30, -1)) + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
             + list(range(54, 47, -1)) + list(range(59, 54, -1)) + list(range(64, 59, -1))
             + list(range(67, 64, -1)))
    q = p[order].copy()
    q[:, 0] = width - 1 - q[:, 0]
    return q


# (frontal photo, turned photo, the turn the person made): labelled by eye
TURN_PAIRS = (  # the committed crops, and the same photos in face_recognition's files
    ("obama_portrait.jpg", "obama_briefing.jpg", "turn_left"),
    ("obama_portrait.jpg", "obama_podium.jpg", "turn_right"),
    ("examples_knn_examples_train_obama_obama.jpg", "examples_knn_examples_test_obama1.jpg",
     "turn_left"),
    ("examples_knn_examples_train_obama_obama.jpg", "examples_knn_examples_train_obama_obama2.jpg",
     "turn_right"),
)


def challenge_rates(photos: Sequence[Photo], th: A.Thresholds) -> dict[str, Any]:
    """Detection on real photos of one person: (first photo, gesture photo) pairs that
    perform a gesture and pairs that do not. Yale's `normal` -> `happy` (smile), `sleepy`
    and `wink` (eyes closing; a wink closes one eye) perform; `normal` -> any other
    condition performs no gesture (all Yale photos face the camera). Turns: `TURN_PAIRS`."""
    by_id: dict[str, list[Photo]] = defaultdict(list)
    for p in photos:
        if p.face is not None:
            by_id[p.identity].append(p)
    out: dict[str, Any] = {}
    performs: dict[str, list[bool]] = defaultdict(list)
    not_performs: dict[str, list[bool]] = defaultdict(list)
    for ps in by_id.values():
        cond = {p.condition: p for p in ps}
        base = cond.get("normal")
        if base is not None:  # Yale: gestures photographed in one session
            for c, gesture in (("happy", "smile"), ("sleepy", "blink"), ("wink", "blink")):
                if c in cond:
                    performs[f"{gesture}:{c}"].append(
                        A.challenge_performed(gesture, [_lm(base), _lm(cond[c])], th))
            for other in ps:
                if other is base:
                    continue
                for gesture in A.Challenge:
                    if (gesture, other.condition) in (("smile", "happy"), ("blink", "sleepy"),
                                                      ("blink", "wink")):
                        continue
                    not_performs[gesture].append(
                        A.challenge_performed(gesture, [_lm(base), _lm(other)], th))
    # turns: only pairs whose turn is known independently of the detector (labelled by
    # looking at the photos), and their mirror images (the opposite turn)
    names = {p.name: p for p in photos if p.face is not None}
    for first, second, asked in TURN_PAIRS:
        a, b = names.get(first), names.get(second)
        if a is None or b is None:
            continue
        opposite = "turn_right" if asked == "turn_left" else "turn_left"
        performs[asked].append(A.challenge_performed(asked, [_lm(a), _lm(b)], th))
        not_performs[opposite].append(A.challenge_performed(opposite, [_lm(a), _lm(b)], th))
        ma, mb = _mirror(_lm(a), a.rgb.shape[1]), _mirror(_lm(b), b.rgb.shape[1])
        performs[f"{opposite}:mirrored"].append(A.challenge_performed(opposite, [ma, mb], th))
    out["performed"] = {k: {"pairs": len(v), "detected": sum(v),
                            "rate": round(sum(v) / len(v), 4)} for k, v in sorted(performs.items())}
    out["not_performed"] = {k: {"pairs": len(v), "falsely_detected": sum(v),
                                "rate": round(sum(v) / len(v), 4)}
                            for k, v in sorted(not_performs.items())}
    return out


# ----------------------------------------------------------------------- replay


def replay_rates(photos: Sequence[Photo], th: A.Thresholds) -> dict[str, Any]:
    """Replays: each photo re-sent recompressed (JPEG q=60) and rescaled to 90 %; distinct
    photos (same person or not) must not count as replays."""
    hashes = [A.phash(A.to_gray(p.rgb)) for p in photos]
    detected = 0
    for p, h in zip(photos, hashes, strict=True):
        im = Image.fromarray(p.rgb)
        im = im.resize((int(im.width * 0.9), int(im.height * 0.9)))
        rgb, _ = decode(encode_jpeg(np.asarray(im), max_bytes=30_000))
        detected += A.hamming(A.phash(A.to_gray(rgb)), h) <= th.replay_distance
    same: list[bool] = []
    other: list[bool] = []
    for (a, ha), (b, hb) in itertools.combinations(zip(photos, hashes, strict=True), 2):
        (same if a.identity == b.identity else other).append(A.hamming(ha, hb) <= th.replay_distance)
    return {
        "replays": len(photos), "replays_detected": int(detected),
        "detection_rate": round(detected / max(len(photos), 1), 4),
        "distinct_same_person_pairs": len(same), "false_replays_same_person": int(sum(same)),
        "distinct_other_person_pairs": len(other), "false_replays_other_person": int(sum(other)),
    }


# ----------------------------------------------------------------------- timings


def timings(photos: Sequence[Photo], model: FaceModel, th: A.Thresholds, n: int) -> dict[str, Any]:
    """Time per check-in (3 frames, JPEG <= 64 KiB, 640 px) and per enrolment (3 photos),
    in this process (one core: dlib runs single-threaded without BLAS here)."""
    usable = [p for p in photos if p.embedding is not None]
    big = [p for p in usable if max(p.rgb.shape[:2]) >= 480]
    usable = big if len(big) >= 3 else usable
    frames = [encode_jpeg(p.rgb) for p in usable]
    by_id: dict[str, list[int]] = defaultdict(list)
    for i, p in enumerate(usable):
        by_id[p.identity].append(i)
    template = A.template_of([usable[0].embedding])  # type: ignore[list-item]
    checkin_ms, decode_ms, enrol_ms, checkin_cpu = [], [], [], []
    for k in range(n):
        trio = [frames[(k + j) % len(frames)] for j in range(3)]
        t0 = time.perf_counter()
        for f in trio:
            decode(f)
        t1 = time.perf_counter()
        c1 = time.process_time()
        verify_checkin(trio, template=template, challenge="turn_left", th=th, model=model)
        t2 = time.perf_counter()
        checkin_cpu.append((time.process_time() - c1) * 1000)
        decode_ms.append((t1 - t0) * 1000)
        checkin_ms.append((t2 - t1) * 1000)
    for k in range(max(3, n // 4)):
        trio = [frames[(k + j) % len(frames)] for j in range(3)]
        t0 = time.perf_counter()
        for i, f in enumerate(trio):
            assess_photo(f, index=i, th=th, model=model)
        enrol_ms.append((time.perf_counter() - t0) * 1000)

    def s(v: list[float]) -> dict[str, float]:
        return {"median": round(statistics.median(v), 1),
                "p95": round(float(np.percentile(v, 95)), 1), "n": len(v)}

    return {"checkin_3_frames_ms": s(checkin_ms), "checkin_3_frames_cpu_ms": s(checkin_cpu),
            "frames_px": sorted({max(p.rgb.shape[:2]) for p in usable}), "reference_decode_3_frames_ms": s(decode_ms),
            "enrolment_3_photos_ms": s(enrol_ms), "target_checkin_ms": 500,
            "load_average_1min": round(os.getloadavg()[0], 2)}


# ----------------------------------------------------------------------- main


def run(data: Path | None, out: Path, *, n_timing: int = 20) -> dict[str, Any]:
    th = A.DEFAULT
    t0 = time.perf_counter()
    model = face_model()
    load_s = time.perf_counter() - t0
    photos, copies = load_photos(data)
    analyse(photos, model)
    pg, pi = pair_scores(photos)
    genuine, impostor = template_scores(photos)
    chosen = choose_threshold(genuine, impostor)
    roc = [rates(genuine, impostor, round(float(t), 3))
           for t in np.arange(chosen - 0.04, chosen + 0.041, 0.01)]
    result: dict[str, Any] = {
        "model": "dlib HOG detector + 68/5-point landmarks + ResNet embedding (128)",
        "model_load_s": round(load_s, 2),
        "photos": len(photos),
        "identities": len({p.identity for p in photos}),
        "copies_left_out": copies,
        "photos_without_one_face": [p.name for p in photos if p.faces != 1],
        "genuine_pairs": len(genuine), "impostor_pairs": len(impostor),
        "protocol": "template of up to 3 photos per person vs each other photo",
        "photo_pairs": {"genuine": len(pg), "impostor": len(pi),
                        "at_configured": rates(pg, pi, th.match)},
        "threshold_configured": th.match,
        "at_configured": rates(genuine, impostor, th.match),
        "threshold_for_far_0.1pct": chosen,
        "roc": roc,
        "challenges": challenge_rates(photos, th),
        "replay": replay_rates(photos, th),
        "timing": timings(photos, model, th, n_timing),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    return result


def report(r: dict[str, Any]) -> str:
    lines = [
        f"photos {r['photos']} of {r['identities']} people ({len(r['copies_left_out'])} copies"
        f" left out, {len(r['photos_without_one_face'])} without exactly one face found)",
        f"templates (up to 3 photos) vs probes: genuine {r['genuine_pairs']},"
        f" impostor {r['impostor_pairs']}",
        f"at the configured threshold {r['threshold_configured']}: FAR {r['at_configured']['far']:.4%}"
        f"  FRR {r['at_configured']['frr']:.4%}",
        f"lowest threshold with FAR <= 0.1 %: {r['threshold_for_far_0.1pct']}",
        f"single photo vs photo at the configured threshold: FAR"
        f" {r['photo_pairs']['at_configured']['far']:.4%} FRR"
        f" {r['photo_pairs']['at_configured']['frr']:.4%} ({r['photo_pairs']['genuine']} genuine,"
        f" {r['photo_pairs']['impostor']} impostor pairs)",
        "ROC around it (threshold, FAR, FRR):",
    ]
    lines += [f"  {p['threshold']:.3f}  {p['far']:.4%}  {p['frr']:.4%}" for p in r["roc"]]
    lines.append("challenges performed (detected / pairs):")
    lines += [f"  {k}: {v['detected']}/{v['pairs']}" for k, v in r["challenges"]["performed"].items()]
    lines.append("challenges not performed (falsely detected / pairs):")
    lines += [f"  {k}: {v['falsely_detected']}/{v['pairs']}"
              for k, v in r["challenges"]["not_performed"].items()]
    rp = r["replay"]
    lines.append(f"replay: {rp['replays_detected']}/{rp['replays']} detected; false replays"
                 f" {rp['false_replays_same_person']}/{rp['distinct_same_person_pairs']} same person,"
                 f" {rp['false_replays_other_person']}/{rp['distinct_other_person_pairs']} others")
    t = r["timing"]
    lines.append(f"check-in (3 frames) median {t['checkin_3_frames_ms']['median']} ms wall,"
                 f" {t['checkin_3_frames_cpu_ms']['median']} ms CPU of one core,"
                 f" p95 {t['checkin_3_frames_ms']['p95']} ms wall (target <= 500 ms); decoding alone"
                 f" {t['reference_decode_3_frames_ms']['median']} ms; enrolment (3 photos) median"
                 f" {t['enrolment_3_photos_ms']['median']} ms; load average {t['load_average_1min']}")
    return "\n".join(lines)

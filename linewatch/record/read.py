"""Reading an archive folder: what `linewatch archive stats | query | export | events` print and write.

Every function opens the journal read-only, so it runs beside a daemon that writes (WAL). Filters
(`Filter`) select rows by decision time (`since`/`until`, epoch ns, half-open), camera, reason (a row
matches when the reason is among its "+"-joined reasons), decision ("pass" | "reject") and score ranges.

- `stats`: inspected, passed, rejected (by reason), fail-safe, yield %, per hour and per shift (local
  time; shifts start at the `shifts` times of day), capture -> decision latency percentiles;
- `query`: the rows, oldest first;
- `export`: a dataset folder in the linewatch format (`linewatch.data.dataset`) of the rows with an
  archived frame: `images/<name>.png`, the model's masks as draft annotations in `draft_masks/<head>/`
  (kept apart from `masks/`, which holds real annotations), `labels.csv` with blank labels (unknown;
  to be labelled) or, with `labels="decision"`, the labels the decision implies. The split is
  deterministic: per label class, oldest first, every `VAL_EVERY`-th sample is `val`, the rest `train`.
- `events`: the audit trail, oldest first.
"""

from __future__ import annotations

import csv
import sqlite3
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS
from linewatch.record.images import mask_paths
from linewatch.record.journal import connect, db_path, event_detail

DEFAULT_SHIFTS = ("06:00", "14:00", "22:00")
VAL_EVERY = 7
"""`export`: every 7th sample of a label class (about 14 %) goes to `val`."""
LABEL_SOURCES = ("blank", "decision")
LATENCY_PERCENTILES = (50, 90, 99)


@dataclass(frozen=True, slots=True)
class Filter:
    since_ns: int | None = None
    until_ns: int | None = None
    camera: str | None = None
    reason: str | None = None
    decision: str | None = None
    anomaly: tuple[float, float] | None = None
    adhesive: tuple[float, float] | None = None

    def where(self) -> tuple[str, list[Any]]:
        """The SQL condition and its parameters."""
        parts: list[str] = []
        args: list[Any] = []
        if self.since_ns is not None:
            parts.append("t_decision_ns >= ?")
            args.append(int(self.since_ns))
        if self.until_ns is not None:
            parts.append("t_decision_ns < ?")
            args.append(int(self.until_ns))
        if self.camera is not None:
            parts.append("camera = ?")
            args.append(self.camera)
        if self.reason is not None:
            parts.append("('+' || reason || '+') LIKE ?")
            args.append(f"%+{self.reason}+%")
        if self.decision is not None:
            parts.append("decision = ?")
            args.append(self.decision)
        for col, rng in (("anomaly", self.anomaly), ("adhesive", self.adhesive)):
            if rng is not None:
                parts.append(f"{col} BETWEEN ? AND ?")
                args += [float(rng[0]), float(rng[1])]
        return (" WHERE " + " AND ".join(parts)) if parts else "", args


def _open(archive_dir: str | Path) -> sqlite3.Connection:
    return connect(db_path(archive_dir), readonly=True)


def query(archive_dir: str | Path, flt: Filter = Filter(), limit: int | None = None) -> list[dict[str, Any]]:
    """The matching rows (dicts, journal columns), oldest first; at most `limit` (the newest ones)."""
    where, args = flt.where()
    con = _open(archive_dir)
    try:
        if limit is not None:
            sql = f"SELECT * FROM (SELECT * FROM decisions{where} ORDER BY id DESC LIMIT ?) ORDER BY id"
            args = [*args, int(limit)]
        else:
            sql = f"SELECT * FROM decisions{where} ORDER BY id"
        return [dict(r) for r in con.execute(sql, args)]
    finally:
        con.close()


def events(archive_dir: str | Path, since_ns: int | None = None, until_ns: int | None = None,
           kind: str | None = None) -> list[dict[str, Any]]:
    """The audit trail, oldest first: t_ns, session, station, kind, detail (a dict)."""
    parts: list[str] = []
    args: list[Any] = []
    if since_ns is not None:
        parts.append("t_ns >= ?")
        args.append(int(since_ns))
    if until_ns is not None:
        parts.append("t_ns < ?")
        args.append(int(until_ns))
    if kind is not None:
        parts.append("kind = ?")
        args.append(kind)
    where = (" WHERE " + " AND ".join(parts)) if parts else ""
    con = _open(archive_dir)
    try:
        return [{"t_ns": int(r["t_ns"]), "session": r["session"], "station": r["station"], "kind": r["kind"],
                 "detail": event_detail(r)}
                for r in con.execute(f"SELECT * FROM events{where} ORDER BY id", args)]
    finally:
        con.close()


def _minutes(hhmm: str) -> int:
    try:
        h, m = hhmm.split(":")
        v = int(h) * 60 + int(m)
    except ValueError:
        v = -1
    if not 0 <= v < 24 * 60:
        raise ValueError(f"shift start {hhmm!r}: must be a time of day HH:MM (00:00 .. 23:59)")
    return v


def shift_of(day: str, minute: int, starts: Sequence[int]) -> str:
    """The shift a local (day "YYYY-MM-DD", minute of the day) falls in, named "<day> <start>"; a minute
    before the first start belongs to the previous day's last shift."""
    s = sorted(starts)
    before = [m for m in s if m <= minute]
    if before:
        start = before[-1]
    else:
        start = s[-1]
        t = time.strptime(day, "%Y-%m-%d")
        day = time.strftime("%Y-%m-%d", time.localtime(time.mktime(t) - 12 * 3600))
    return f"{day} {start // 60:02d}:{start % 60:02d}"


def _tally(n: int, rejects: int) -> dict[str, Any]:
    return {"inspected": n, "passed": n - rejects, "rejected": rejects,
            "yield_pct": round(100.0 * (n - rejects) / n, 3) if n else None}


def stats(archive_dir: str | Path, flt: Filter = Filter(), shifts: Sequence[str] = DEFAULT_SHIFTS) -> dict[str, Any]:
    """The counts of the matching rows (module doc) as one JSON-ready dict."""
    starts = [_minutes(s) for s in shifts]
    if not starts:
        raise ValueError("shifts: give at least one shift start (HH:MM)")
    where, args = flt.where()
    con = _open(archive_dir)
    try:
        total = con.execute(f"SELECT COUNT(*), COALESCE(SUM(decision = 'reject'), 0), COALESCE(SUM(failsafe), 0), "
                            f"MIN(t_decision_ns), MAX(t_decision_ns) FROM decisions{where}", args).fetchone()
        by_reason: Counter[str] = Counter()
        for r in con.execute(f"SELECT reason, COUNT(*) FROM decisions{where} GROUP BY reason", args):
            if r[0] != "pass":
                for part in str(r[0]).split("+"):
                    by_reason[part] += int(r[1])
        per_minute = con.execute(
            "SELECT strftime('%Y-%m-%d %H:%M', t_decision_ns / 1e9, 'unixepoch', 'localtime') AS m, COUNT(*), "
            f"SUM(decision = 'reject') FROM decisions{where} GROUP BY m ORDER BY m", args).fetchall()
        lat = np.array([r[0] for r in con.execute(
            f"SELECT t_decision_ns - t_capture_ns FROM decisions{where}", args)], np.float64) / 1e6
        cameras = {str(r[0]): _tally(int(r[1]), int(r[2])) for r in con.execute(
            f"SELECT camera, COUNT(*), SUM(decision = 'reject') FROM decisions{where} GROUP BY camera ORDER BY camera",
            args)}
    finally:
        con.close()
    hours: dict[str, list[int]] = {}
    per_shift: dict[str, list[int]] = {}
    for m, n, rej in per_minute:
        day, hm = m.split(" ")
        hh, mm = hm.split(":")
        for key, acc in ((f"{day} {hh}:00", hours), (shift_of(day, int(hh) * 60 + int(mm), starts), per_shift)):
            a = acc.setdefault(key, [0, 0])
            a[0] += int(n)
            a[1] += int(rej)
    n, rejects = int(total[0]), int(total[1])
    out: dict[str, Any] = {
        **_tally(n, rejects),
        "failsafe": int(total[2]),
        "by_reason": dict(sorted(by_reason.items())),
        "first_ns": total[3], "last_ns": total[4],
        "latency_ms": ({f"p{q}": round(float(np.percentile(lat, q)), 3) for q in LATENCY_PERCENTILES}
                       | {"max": round(float(lat.max()), 3)}) if lat.size else {},
        "cameras": cameras,
        "per_hour": {k: _tally(*v) for k, v in hours.items()},
        "per_shift": {k: _tally(*v) for k, v in per_shift.items()},
        "shifts": list(shifts),
    }
    return out


def _labels(row: dict[str, Any]) -> tuple[str, str]:
    """(anomaly, adhesive) labels a decision implies: "1"/"0", "" where it says nothing (the adhesive
    rule `ignore`; a fail-safe reject, which was not judged on its scores)."""
    if row["failsafe"]:
        return "", ""
    reasons = set(str(row["reason"]).split("+"))
    anomaly = "1" if "anomaly" in reasons else "0"
    rule = row["adhesive_rule"]
    if rule == "present":
        adhesive = "0" if "adhesive-missing" in reasons else "1"
    elif rule == "absent":
        adhesive = "1" if "adhesive-present" in reasons else "0"
    else:
        adhesive = ""
    return anomaly, adhesive


def export(archive_dir: str | Path, out: str | Path, flt: Filter = Filter(), labels: str = "blank",
           limit: int | None = None) -> dict[str, Any]:
    """Write the rows with an archived frame as a dataset folder (module doc); a summary dict.
    Raises ValueError for a bad `labels` or an `out` folder that is not empty."""
    import cv2

    if labels not in LABEL_SOURCES:
        raise ValueError(f"labels = {labels!r}: must be one of {', '.join(LABEL_SOURCES)}")
    root, dst = Path(archive_dir), Path(out)
    if dst.exists() and any(dst.iterdir()):
        raise ValueError(f"{dst}: not empty (export writes a new dataset folder)")
    rows = [r for r in query(root, flt, limit) if r["image"]]
    (dst / "images").mkdir(parents=True, exist_ok=True)
    for h in HEADS:
        (dst / "draft_masks" / h).mkdir(parents=True, exist_ok=True)
    written, missing = [], 0
    for r in rows:
        src = root / r["image"]
        image = cv2.imread(str(src), cv2.IMREAD_COLOR)
        if image is None:
            missing += 1  # rotated away after the query, or unreadable
            continue
        name = f"{r['camera']}-{r['session'][:8]}-{r['frame_id']}"
        cv2.imwrite(str(dst / "images" / f"{name}.png"), image)
        for h, mrel in mask_paths(r["image"]).items():
            m = cv2.imread(str(root / mrel), cv2.IMREAD_GRAYSCALE)
            if m is not None:
                m = cv2.resize(m, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_LINEAR)
                cv2.imwrite(str(dst / "draft_masks" / h / f"{name}.png"), np.where(m >= 128, 255, 0).astype(np.uint8))
        written.append((name, _labels(r) if labels == "decision" else ("", "")))
    per_class: Counter[tuple[str, str]] = Counter()
    with open(dst / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "split", *HEADS])
        for name, lab in written:
            i = per_class[lab]
            per_class[lab] += 1
            w.writerow([name, "val" if i % VAL_EVERY == VAL_EVERY - 1 else "train", *lab])
    return {"out": str(dst), "samples": len(written), "missing_images": missing, "labels": labels,
            "classes": {"/".join(x or "?" for x in k): v for k, v in sorted(per_class.items())}}


def iter_rows_jsonl(rows: Sequence[dict[str, Any]]) -> Iterator[str]:
    from linewatch.jsonfile import dumps

    for r in rows:
        yield dumps(r)

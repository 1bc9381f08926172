"""The journal database of an archive folder: `<dir>/journal.sqlite`, SQLite in WAL mode.

Tables (`SCHEMA`; `meta.schema` = `SCHEMA_VERSION`):

- `decisions`: one row per decision the daemon published: session, station, camera, frame_id, `seq`
  (the decision topic's sequence number) and `reject_seq` (the reject topic's, NULL for a pass), capture
  and decision times (epoch ns), both scores (NULL when the frame was not inferred), both thresholds,
  the adhesive rule it was decided under, `decision` ("pass" | "reject"), `reason` (the reasons joined
  with "+", as on the wire), `failsafe` (0/1), `model` (the model id), `profile_sha256` (of the station
  profile that decided), `image` (the archived frame's path relative to the folder, NULL when none).
- `events`: the audit trail: t_ns, session, station, `kind` (`EVENT_KINDS`), `detail` (JSON object).

`Journal` is the only writer (the recorder's thread owns one); readers open the file read-only
(`connect(path, readonly=True)`) and may run while it writes: WAL lets them read the last commit.
A writer commits in batches (`Journal.write`); `synchronous=NORMAL` in WAL mode loses nothing that was
committed when the process is killed (only a power loss can cost the last transactions).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from linewatch.jsonfile import dumps

DB_NAME = "journal.sqlite"
SCHEMA_VERSION = 1

EVENT_KINDS = ("start", "stop", "reload", "model", "camera", "curve", "archive", "rotation")
"""`start`/`stop` (version, profile sha256, model id, engine, precision), `reload` (what changed: old -> new
thresholds and rule), `model` (a model swapped in), `camera` (down / up), `curve` (on / off at start),
`archive` (degraded / recovered), `rotation` (images and rows deleted, counts)."""

DECISION_COLUMNS = ("session", "station", "camera", "frame_id", "seq", "reject_seq", "t_capture_ns",
                    "t_decision_ns", "anomaly", "adhesive", "t_anomaly", "t_adhesive", "adhesive_rule",
                    "decision", "reason", "failsafe", "model", "profile_sha256", "image")

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    station TEXT NOT NULL,
    camera TEXT NOT NULL,
    frame_id INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    reject_seq INTEGER,
    t_capture_ns INTEGER NOT NULL,
    t_decision_ns INTEGER NOT NULL,
    anomaly REAL,
    adhesive REAL,
    t_anomaly REAL NOT NULL,
    t_adhesive REAL NOT NULL,
    adhesive_rule TEXT NOT NULL,
    decision TEXT NOT NULL CHECK (decision IN ('pass', 'reject')),
    reason TEXT NOT NULL,
    failsafe INTEGER NOT NULL CHECK (failsafe IN (0, 1)),
    model TEXT NOT NULL,
    profile_sha256 TEXT NOT NULL,
    image TEXT
);
CREATE INDEX IF NOT EXISTS decisions_time ON decisions (t_decision_ns);
CREATE INDEX IF NOT EXISTS decisions_camera_time ON decisions (camera, t_decision_ns);
CREATE INDEX IF NOT EXISTS decisions_image ON decisions (decision, id) WHERE image IS NOT NULL;
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY,
    t_ns INTEGER NOT NULL,
    session TEXT NOT NULL,
    station TEXT NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_time ON events (t_ns);
"""

_INSERT_DECISION = (f"INSERT INTO decisions ({', '.join(DECISION_COLUMNS)}) "
                    f"VALUES ({', '.join('?' * len(DECISION_COLUMNS))})")
_INSERT_EVENT = "INSERT INTO events (t_ns, session, station, kind, detail) VALUES (?, ?, ?, ?, ?)"


class JournalError(Exception):
    """The journal cannot be opened or is not a linewatch journal (the message says which file and why)."""


def db_path(archive_dir: str | Path) -> Path:
    return Path(archive_dir) / DB_NAME


def connect(path: str | Path, *, readonly: bool = False) -> sqlite3.Connection:
    """A connection to a journal file; read-only ones never create it and never block the writer."""
    p = Path(path)
    if readonly:
        if not p.is_file():
            raise JournalError(f"{p}: no journal here (an archive folder holds {DB_NAME})")
        con = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=5.0)
    else:
        con = sqlite3.connect(str(p), timeout=5.0, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    try:
        con.execute("PRAGMA busy_timeout = 5000")
        if readonly:
            version = con.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if version is None or int(version[0]) > SCHEMA_VERSION:
                raise JournalError(f"{p}: journal schema {version[0] if version else '?'}; this linewatch reads "
                                   f"schema {SCHEMA_VERSION} (a newer linewatch wrote it)")
    except sqlite3.DatabaseError as exc:
        con.close()
        raise JournalError(f"{p}: not a linewatch journal ({exc})") from exc
    return con


class Journal:
    """The writing side (one per archive folder, in the recorder's thread)."""

    def __init__(self, archive_dir: str | Path) -> None:
        self.path = db_path(archive_dir)
        self.con = connect(self.path)
        self.con.execute("PRAGMA journal_mode = WAL")
        self.con.execute("PRAGMA synchronous = NORMAL")
        self.con.executescript(SCHEMA)
        self.con.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))

    def write(self, rows: Sequence[Sequence[Any]],
              events: Iterable[tuple[int, str, str, str, dict[str, Any]]] = ()) -> None:
        """One transaction: decision rows (values in `DECISION_COLUMNS` order) and events
        (t_ns, session, station, kind, detail). All or nothing."""
        con = self.con
        con.execute("BEGIN")
        try:
            if rows:
                con.executemany(_INSERT_DECISION, rows)
            for t_ns, session, station, kind, detail in events:
                con.execute(_INSERT_EVENT, (int(t_ns), session, station, kind, dumps(detail)))
            con.execute("COMMIT")
        except BaseException:
            con.execute("ROLLBACK")
            raise

    def oldest_images(self, decision: str, limit: int) -> list[tuple[int, str]]:
        """(row id, image path) of the oldest rows of `decision` ("pass" | "reject") that still have an image."""
        cur = self.con.execute("SELECT id, image FROM decisions WHERE decision = ? AND image IS NOT NULL "
                               "ORDER BY id LIMIT ?", (decision, int(limit)))
        return [(int(r[0]), str(r[1])) for r in cur]

    def forget_images(self, ids: Sequence[int]) -> None:
        """Rows whose images rotation deleted keep their scores; `image` becomes NULL."""
        self.con.execute("BEGIN")
        self.con.executemany("UPDATE decisions SET image = NULL WHERE id = ?", [(int(i),) for i in ids])
        self.con.execute("COMMIT")

    def images_before(self, t_ns: int) -> list[tuple[int, str]]:
        cur = self.con.execute("SELECT id, image FROM decisions WHERE t_decision_ns < ? AND image IS NOT NULL",
                               (int(t_ns),))
        return [(int(r[0]), str(r[1])) for r in cur]

    def delete_before(self, t_ns: int) -> int:
        """Delete decision rows decided before `t_ns` (age rotation); the count."""
        self.con.execute("BEGIN")
        n = self.con.execute("DELETE FROM decisions WHERE t_decision_ns < ?", (int(t_ns),)).rowcount
        self.con.execute("COMMIT")
        return int(n)

    def close(self) -> None:
        try:
            self.con.close()
        except sqlite3.Error:
            pass


def event_detail(row: sqlite3.Row) -> dict[str, Any]:
    try:
        out = json.loads(row["detail"])
    except (TypeError, ValueError):
        return {"raw": str(row["detail"])}
    return out if isinstance(out, dict) else {"value": out}

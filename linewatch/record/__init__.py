"""The station record: every decision journaled, every reject's image kept, every change audited.

A side consumer of the publisher (it never slows or stops a decision):

    journal.py    the SQLite database (WAL): tables `decisions` (one row per decision), `events` (the
                  audit trail), `meta`; the schema and the only SQL that writes
    images.py     where a decision's frame and masks lie in the archive folder, writing them, rotation
    recorder.py   `Recorder`: the publisher's hook (bounded queue, preallocated image pool, never blocks)
                  and its writer thread (batched transactions, degraded instead of failing)
    read.py       what `linewatch archive stats | query | export | events` read (works while the
                  daemon writes)

An archive folder holds `journal.sqlite` and `images/<YYYY-MM-DD>/<camera>/`. A restart appends to the
same folder under a new session id.
"""

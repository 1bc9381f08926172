"""The human-readable report and the JSON form of the configuration."""

from __future__ import annotations

from typing import Any

from linewatch.bench.config import BenchConfig, prof_name

# --------------------------------------------------------------------------------------------------
# human-readable output


def format_report(r: dict[str, Any]) -> str:
    """The report as text (the default output of `linewatch bench`)."""
    b, e, t, f = r["bench"], r["engine"], r["throughput"], r["frames"]
    lat, sp, res = r["latency_ms"], r["latency_split_ms"], r["resources"]
    h = b["host"]
    lines = [
        f"linewatch bench {b['linewatch']}  {b['date_utc']}",
        f"  host      {h['cpus']} CPUs ({h['processor']}), load {h['loadavg_before']} -> {h['loadavg_after']}",
        f"  engine    {e['backend']} on {e['device']}, input {e['input_hw'][0]}x{e['input_hw'][1]}, "
        f"max_batch {e['max_batch']}{' (chosen by --inflight auto)' if e.get('max_batch_note', '').startswith('worker') else ''}"
        f", model {e['model']}",
        f"  source    {b['source']}",
        f"  profile   {b['profile']}; overlays {'on' if b['overlays'] else 'off'}; "
        f"warm-up {b['warmup_s']:g} s, measured {b['duration_s']:g} s ({t['windows']} windows of 1 s)",
        f"  pacing    {b['pace']}" + (f" (inflight {b['inflight']}"
                                       + (f"; engine ms per batch size {b['inflight_calibration_ms']}"
                                          if b.get("inflight_calibration_ms") else "") + ")"
                                       if b.get("inflight") else "") + ": " + {
            "backpressure": "closed loop, the camera is triggered when the ring has room (no drops by construction)",
            "fixed": "free-running camera at a fixed rate; a full ring drops frames (fail-safe rejects)",
            "free": "camera as fast as it can copy; frames that find the ring full are dropped (fail-safe)",
            "source": "the profile's cameras at their own rate; a full ring drops frames (fail-safe rejects)",
        }[b["pace"]],
        "",
        "throughput (decisions received per 1-s window)   median      min      max",
        f"  inferred                                   {t['inferred_fps']['median']:9.1f} {t['inferred_fps']['min']:8.1f} "
        f"{t['inferred_fps']['max']:8.1f}",
        f"  fail-safe                                  {t['failsafe_fps']['median']:9.1f} {t['failsafe_fps']['min']:8.1f} "
        f"{t['failsafe_fps']['max']:8.1f}",
        f"  all                                        {t['fps']['median']:9.1f} {t['fps']['min']:8.1f} "
        f"{t['fps']['max']:8.1f}",
        "",
        "latency, capture -> subscriber receipt (ms)       p50      p95      p99      max",
        f"  all frames ({lat['n']})".ljust(45) + _lat_cols(lat),
        "  capture -> decision".ljust(45) + _lat_cols(sp["capture_to_decision"]),
        "  decision -> sent (publisher queue)".ljust(45) + _lat_cols(sp["decision_to_sent"]),
        "  sent -> received (ZeroMQ + JSON)".ljust(45) + _lat_cols(sp["sent_to_received"]),
        f"  inferred in time ({sp['inferred_only']['n']})".ljust(45) + _lat_cols(sp["inferred_only"]),
        f"  fail-safe ({sp['failsafe_only']['n']})".ljust(45) + _lat_cols(sp["failsafe_only"]),
        "",
        "worker stages (ms; wait/infer per batch, decide/submit per frame)   mean      p50      p99      max",
    ]
    for stage, s in r["stages_ms"].items():
        lines.append(f"  {stage:<10} n={s['n']:<9}".ljust(61) +
                     f"{s['mean']:8.3f} {s['p50']:8.3f} {s['p99']:8.3f} {s['max']:8.3f}")
    bs = r["batch_sizes"]
    lines += [
        f"  batch sizes: {', '.join(f'{k}:{v}' for k, v in bs.items()) or '-'}",
        "",
        f"frames: produced {f['produced']}, decisions {f['decisions']} = inferred {f['inferred']} + fail-safe "
        f"{f['failsafe']}; rejects {f['rejects']}; without a decision {f['missing']}; duplicates {f['duplicates']}; "
        f"seq gaps {f['seq_gaps']}",
        f"  where: not decided by the worker {f['not_decided']}, published but not received {f['lost_in_transport']} "
        f"(PUB high-water mark or linger at close); subscriber: {f['subscriber']['status']}",
        f"  reasons: {', '.join(f'{k} {v}' for k, v in f['reasons'].items()) or '-'}",
        f"  measured period: {r['measured']['decisions']} decisions ({r['measured']['inferred']} inferred, "
        f"{r['measured']['failsafe']} fail-safe); ring {r['measured']['ring']}",
        f"publisher: {', '.join(f'{k} {v}' for k, v in r['publisher'].items())}",
        f"resources: CPU {res['cpu_cores_used']:.2f} cores of {res['cores']} ({100 * res['cpu_share_of_machine']:.0f}%), "
        f"peak RSS {res['max_rss_mb']:.0f} MB (this process: ring, pool, engine); subscriber process "
        f"{res['subscriber_cpu_cores_used']:.2f} cores",
    ]
    for name, base in (r.get("baseline") or {}).items():
        c = r["comparison"][name]
        lines += [
            "",
            f"baseline {name}: {base['what']}",
            f"  {base['frames']} frames in {base['duration_s']:g} s: median window {base['fps']['median']:.1f} fps, "
            f"min {base['fps']['min']:.1f}; latency p50 {base['latency_ms']['p50']:.2f} ms, "
            f"p99 {base['latency_ms']['p99']:.2f} ms",
            f"  pipeline / baseline: throughput x{c['throughput_ratio']}, latency p50 x{c['latency_p50_ratio']}",
        ]
    if "archive" in r:
        a = r["archive"]
        lines.append(f"  archive   {a['dir']}: {a['state']}, {a['rows']} rows, {a['images']} images, "
                     f"{a['rows_missing']} decisions without a row (queue full {a['queue_full']}, lost {a['rows_lost']})")
    v = r["verdict"]
    lines += ["", "verdict: " + ("PASS" if v["ok"] else "FAIL") +
              (f" (min window >= {v['min_fps']:g} fps, every frame decided)" if v["ok"] else "")]
    lines += [f"  - {x}" for x in v["failures"]]
    return "\n".join(lines)


def _lat_cols(s: dict[str, float]) -> str:
    return f"{s['p50']:8.2f} {s['p95']:8.2f} {s['p99']:8.2f} {s['max']:8.2f}"


def config_dict(cfg: BenchConfig) -> dict[str, Any]:
    """The config as JSON-able values (the profile by its file name)."""
    d = {k: getattr(cfg, k) for k in BenchConfig.__dataclass_fields__ if k not in ("profile", "model", "archive")}
    d["profile"] = prof_name(cfg.profile)
    d["model"] = str(cfg.model) if cfg.model else None
    d["archive"] = str(cfg.archive) if cfg.archive else None
    return d

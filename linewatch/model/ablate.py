"""`linewatch ablate`: the paper's ablation tables on a dataset, same split and seed for every row.

    table 2  depth v1–v4, no ResSE                                   (paper Table 2)
    table 4  ResSE none / v1 / v2 / v3 on depth v2                   (paper Table 4)
    table 5  seg loss linear+MSE, sigmoid+MSE, sigmoid+CE on ResSE v1 (paper Table 5)

A row key may carry recipe options after `+` (docs/model.md, "Recipe options"), each measured as a row
of its own against the same folds: `resse-v3+balance`, `resse-v1+dilate7`, `resse-v1+dist2`,
`resse-v1+joint20`, `resse-v1+posauto`, combined as `resse-v3+balance+dist2`. Every row's test metrics are
reported at the paper's 0.7 and at that run's recommended thresholds (chosen on its validation part by
training, never on the test part).

A row that appears in two tables (baseline v2 = Table 4's baseline; ResSE v1 = sigmoid+CE) is trained
once. Without folds (`folds` 0), each row trains on the dataset's train split (validation: its val split
or a held-out share) and is measured on its test split. With `folds` K, all samples are dealt into K
folds stratified by class (`Sample.group` and labels, seed fixed); each row is trained K times, fold
k held out as test, and the table shows the mean (± std) over folds. Rows already finished in
`out` (their `eval.json` exists) are not trained again, and an interrupted one resumes its `last.pt`, so an
interrupted ablation continues — only where the run there has this ablation's settings (`RUN_SETTINGS`,
kept in `eval.json`, `linewatch.model.train`'s) and this split (`split.json` beside it, and eval.json's
"fold_split": folds, fold, and a digest of its train, validation and test samples): one trained otherwise is refused by name, never mixed into
the table. Every row's options are checked before the first row trains. `eval.json` is written whole or not at
all (a temporary file renamed), with the machine that trained the run (`trained_on`: host, device, amp,
threads, wall seconds).

Output: `OUT/<row>/[fold<k>/]` run folders with `eval.json`, `OUT/results.json`, `OUT/ablation.md` — the last
two rewritten after every finished run, with each row's runs done and its training minutes per run (summed
over `log.jsonl`, every sitting of a resumed run) and the machines that trained it (`results.json` "cost").

`only_folds` (with `folds` K) trains just those folds of the same K-fold split; a run of any other fold
that has finished in `out` is still reported (its `eval.json`), so folds trained in different sittings or on
different machines, their run folders copied into one `out`, make one table.

`parallel` N > 1 trains N runs at once in processes that share the machine's CPUs out between them
(`worker_threads`): torch in each would otherwise start a thread per core, N times over.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from linewatch import HEADS, atomicfile, jsonfile
from linewatch.errors import SettingError
from linewatch.model.data import holdout, strat_key, stratified_folds
from linewatch.model.metrics import DEFAULT_THRESHOLD
from linewatch.model.train import RUN_SETTINGS, TrainConfig, pick_device, train

# key -> (model overrides, seg loss)
ROWS: dict[str, tuple[dict[str, Any], str]] = {
    "baseline-v1": ({"depth": "v1", "resse": "none"}, "bce"),
    "baseline-v2": ({"depth": "v2", "resse": "none"}, "bce"),
    "baseline-v3": ({"depth": "v3", "resse": "none"}, "bce"),
    "baseline-v4": ({"depth": "v4", "resse": "none"}, "bce"),
    "resse-v1": ({"depth": "v2", "resse": "v1"}, "bce"),
    "resse-v2": ({"depth": "v2", "resse": "v2"}, "bce"),
    "resse-v3": ({"depth": "v2", "resse": "v3"}, "bce"),
    "resse-v1-mse-linear": ({"depth": "v2", "resse": "v1"}, "mse-linear"),
    "resse-v1-mse-sigmoid": ({"depth": "v2", "resse": "v1"}, "mse-sigmoid"),
}

TABLES: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "2": ("Table 2 — baseline depth (no ResSE)", [
        ("baseline v1", "baseline-v1"), ("baseline v2", "baseline-v2"),
        ("baseline v3", "baseline-v3"), ("baseline v4", "baseline-v4"),
    ]),
    "4": ("Table 4 — ResSE placement (depth v2)", [
        ("baseline", "baseline-v2"), ("ResSE v1", "resse-v1"), ("ResSE v2", "resse-v2"), ("ResSE v3", "resse-v3"),
    ]),
    "5": ("Table 5 — segmentation activation + loss (ResSE v1)", [
        ("linear + MSE", "resse-v1-mse-linear"), ("sigmoid + MSE", "resse-v1-mse-sigmoid"),
        ("sigmoid + CE", "resse-v1"),
    ]),
}

METRIC_KEYS = ("AP_pos", "AP_neg", "TPR", "TNR", "TPR_rec", "TNR_rec", "t_rec")
"""Per head in the summary: the paper's four at 0.7, then TPR/TNR at the recommended threshold, and it."""

_OPTIONS: list[tuple[re.Pattern[str], Callable[[re.Match[str]], dict[str, Any]], str]] = [
    (re.compile(r"balance"), lambda m: {"balance": True}, "balance"),
    (re.compile(r"dilate(\d+)"), lambda m: {"dilate": int(m.group(1))}, "dilate<px>"),
    (re.compile(r"dist(\d+(?:\.\d+)?)"), lambda m: {"seg_distance_p": float(m.group(1))}, "dist<p>"),
    (re.compile(r"joint(\d+)"), lambda m: {"joint_epochs": int(m.group(1))}, "joint<epochs>"),
    (re.compile(r"posauto"), lambda m: {"pos_weight": "auto"}, "posauto"),
]


def row_config(key: str) -> tuple[dict[str, Any], str, dict[str, Any]]:
    """(model overrides, seg loss, train overrides) of a row key `BASE[+OPTION...]` (module doc)."""
    base, *opts = key.split("+")
    if base not in ROWS:
        raise SettingError(f"`tables`: unknown table or row {key!r}; allowed: tables {', '.join(TABLES)}, rows "
                           f"{', '.join(ROWS)}, each optionally with +{', +'.join(o[2] for o in _OPTIONS)}")
    overrides, loss = ROWS[base]
    train: dict[str, Any] = {}
    for opt in opts:
        for pattern, make, _ in _OPTIONS:
            m = pattern.fullmatch(opt)
            if m:
                train.update(make(m))
                break
        else:
            raise SettingError(f"`tables`: row {key!r}: unknown option {opt!r}; allowed: "
                               f"{', '.join(o[2] for o in _OPTIONS)}")
    return overrides, loss, train


def plan(tables: list[str]) -> list[str]:
    """Row keys to train for the given tables (or row keys given directly), each once, in order."""
    keys: list[str] = []
    for t in tables:
        if t not in TABLES:
            row_config(t)  # a row key, else a SettingError naming what is allowed
            if t not in keys:
                keys.append(t)
            continue
        for _, key in TABLES[t][1]:
            if key not in keys:
                keys.append(key)
    return keys


def row_train_config(base: TrainConfig, key: str, run_dir: Path) -> TrainConfig:
    """The training settings of row `key` in `run_dir`, checked (a SettingError names the option)."""
    from linewatch.model.train import check_pos_weight, check_recipe

    overrides, loss, train_overrides = row_config(key)
    tc = replace(base, out=str(run_dir), seg_loss=loss, model={**base.model, **overrides, "seg_activation": "sigmoid"},
                 **train_overrides)
    tc.pos_weight = check_pos_weight(tc.pos_weight)
    try:
        check_recipe(tc)
    except SettingError as exc:
        raise SettingError(f"`tables`: row {key!r}: {exc}") from None
    return tc


def run_settings(tc: TrainConfig) -> dict[str, Any]:
    """What a run is (`RUN_SETTINGS` and the model settings this ablation sets), as plain JSON values."""
    plain = json.loads(jsonfile.dumps({k: getattr(tc, k) for k in RUN_SETTINGS}))
    plain["model"] = json.loads(jsonfile.dumps({k: v for k, v in tc.model.items() if k != "seg_activation"}))
    return plain


def check_same_run(tc: TrainConfig, run_dir: Path) -> None:
    """SettingError when `run_dir` holds a run (finished: `eval.json`'s settings; interrupted: `last.pt`'s)
    trained with other settings than `tc` — reusing it would mix two recipes in one table without a word."""
    done, last = run_dir / "eval.json", run_dir / "last.pt"
    old: dict[str, Any] | None = None
    if done.is_file():
        old = json.loads(done.read_text()).get("train")
    if old is None and last.is_file():
        import torch

        saved = torch.load(last, map_location="cpu", weights_only=True)["train"]
        old = {**run_settings(TrainConfig.from_dict(saved)), "model": json.loads(jsonfile.dumps(saved.get("model", {})))}
    if old is None:
        return  # an eval.json from before the settings were kept, and no checkpoint beside it: nothing to compare
    new = run_settings(tc)
    diffs = [f"{k} {old.get(k)!r} there, {v!r} here" for k, v in new.items() if k != "model" and old.get(k) != v]
    old_model = old.get("model") or {}
    diffs += [f"model.{k} {old_model.get(k)!r} there, {v!r} here" for k, v in new["model"].items()
              if k in old_model and old_model[k] != v]
    if diffs:
        raise SettingError(f"{run_dir} holds a run with other settings ({'; '.join(diffs)}); give the ablation "
                           "another `out`, or remove that folder to train it again")


def _digest(samples: list[Any]) -> str:
    """Which samples, as a short digest of their sorted `group/name`s (the same on every copy of a dataset)."""
    import hashlib

    names = "\n".join(sorted(f"{s.group}/{s.name}" for s in samples))
    return hashlib.sha1(names.encode()).hexdigest()[:16]


def split_of(folds: int, sub: str, splits: tuple[Any, list[Any], list[Any]], test: list[Any]) -> dict[str, Any]:
    """A run's place in the ablation's split: K, its fold (None without folds) and digests of its parts."""
    _, tr, va = splits
    return {"folds": folds, "fold": int(sub[4:]) if sub.startswith("fold") else None,
            "train": _digest(tr), "val": _digest(va), "test": _digest(test), "n_test": len(test)}


def check_same_split(split: dict[str, Any], run_dir: Path) -> None:
    """SettingError when `run_dir` holds a run (its `split.json`, or its `eval.json`'s "fold_split") of another split
    than `split`: a fold of another K, another fold, or another copy of the data is never reported as this one."""
    old = None
    for f in (run_dir / "split.json", run_dir / "eval.json"):
        if old is None and f.is_file():
            old = json.loads(f.read_text()) if f.name == "split.json" else json.loads(f.read_text()).get("fold_split")
    if not isinstance(old, dict):  # a run from before splits were kept: its test part's size, at least
        n = json.loads((run_dir / "eval.json").read_text()).get("n") if (run_dir / "eval.json").is_file() else None
        if n is not None and split.get("n_test") is not None and n != split["n_test"]:
            raise SettingError(f"{run_dir} holds a run of another split ({n} test images there, {split['n_test']} "
                               "here); give the ablation another `out`, or remove that folder to train it again")
        return
    diffs = [f"{k} {old[k]!r} there, {v!r} here" for k, v in split.items() if k in old and old[k] != v]  # older: fewer
    if diffs:
        raise SettingError(f"{run_dir} holds a run of another split ({'; '.join(diffs)}); give the ablation "
                           "another `out`, or remove that folder to train it again")


def _run_one(base: TrainConfig, key: str, run_dir: Path, splits: tuple[Any, list[Any], list[Any]],
             test: list[Any], device: str, split: dict[str, Any]) -> dict[str, Any]:
    import torch

    from linewatch.model.evaluate import checkpoint_thresholds, evaluate

    tc = row_train_config(base, key, run_dir)
    check_same_run(tc, run_dir)
    check_same_split(split, run_dir)
    done = run_dir / "eval.json"
    if done.is_file():
        return json.loads(done.read_text())
    run_dir.mkdir(parents=True, exist_ok=True)
    if not (run_dir / "split.json").is_file():  # a run begun before split.json: assumed to be of this split
        mark = {"assumed": True} if (run_dir / "last.pt").is_file() else {}
        atomicfile.write_text(run_dir / "split.json", jsonfile.dumps({**split, **mark}, indent=2) + "\n")
    # an interrupted row continues, in the precision this ablation asks for (`amp` is the sitting's)
    train(tc, resume=(run_dir / "last.pt").is_file(), splits=splits, asked=("amp",))
    best = run_dir / "best.pt"
    res = evaluate(best, base.data, out=run_dir / "eval", samples=test, device=device, threshold=DEFAULT_THRESHOLD,
                   also_at={"recommended": checkpoint_thresholds(best)})
    res["metrics"] = jsonfile.clean(res["metrics"])
    res["also"] = jsonfile.clean(res["also"])
    res["train"] = run_settings(tc)
    res["fold_split"] = split  # ("split" is evaluate's: the dataset split scored, "test" for given samples)
    training = torch.load(best, map_location="cpu", weights_only=True).get("training", {})
    res["trained_on"] = {k: training.get(k) for k in ("host", "device", "amp", "threads", "wall_s")}
    atomicfile.write_text(done, jsonfile.dumps(res, indent=2) + "\n")
    return res


def worker_threads(parallel: int, cpus: int | None = None) -> int:
    """torch's intra-op threads in each of `parallel` training processes: the CPUs this process may run on
    (`cpus`, default its affinity) shared out, at least 1 each. On the 2-vCPU dev box two 1-thread runs
    train 1.19x the images a second of one 2-thread run (`benchmarks/train_threads.py`, docs/results.md)."""
    if cpus is None:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cpus // max(1, parallel))


def _set_threads(n: int) -> None:
    """A pool worker's initializer: `n` intra-op threads for the runs it trains."""
    import torch

    torch.set_num_threads(n)


def _run_dir(out: Path, key: str, sub: str) -> Path:
    return out / key / sub if sub else out / key


def run_ablation(base: TrainConfig, out: str | Path, tables: list[str], folds: int = 0,
                 parallel: int = 1, only_folds: list[int] | None = None) -> dict[str, Any]:
    """Train and evaluate every row of `tables` (`parallel` runs at once, in processes), only the folds
    `only_folds` when given (others reported where finished); write OUT/results.json and OUT/ablation.md."""
    from linewatch.data.dataset import open_dataset

    if only_folds is not None:
        listed = ",".join(str(k) for k in only_folds)
        if not folds:
            raise SettingError(f"`only_folds` {listed!r}: needs `folds` K >= 2 (the folds to choose from)")
        if not only_folds or any(not 0 <= k < folds for k in only_folds):
            raise SettingError(f"`only_folds` {listed!r}: allowed: fold numbers 0 to {folds - 1}, comma-separated")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    ds = open_dataset(base.data)
    device = str(pick_device(base.device))
    keys = plan(tables)
    for key in keys:  # every row's settings checked before the first one trains (hours may pass before the last)
        row_train_config(base, key, out / key)
    # the same split for every row
    jobs: list[tuple[str, tuple[Any, list[Any], list[Any]], list[Any]]] = []
    if folds:
        samples = list(ds.samples)
        fold_of = stratified_folds([strat_key(s) for s in samples], folds, base.seed)
        for k in range(folds):
            rest = [s for s, f in zip(samples, fold_of, strict=True) if f != k]
            test = [s for s, f in zip(samples, fold_of, strict=True) if f == k]
            tr, va = holdout([strat_key(s) for s in rest], base.val_split, base.seed)
            jobs.append((f"fold{k}", (ds, [rest[i] for i in tr], [rest[i] for i in va]), test))
    else:
        from linewatch.model.train import resolve_splits

        test = ds.split("test")
        if not test:
            raise SettingError(f"{base.data}: no 'test' split to measure the ablation on (or use `folds` K >= 2)")
        jobs.append(("", resolve_splits(base.data, base.val_split, base.seed), test))

    # fold-major: every row's fold 0 before any row's fold 1, so an interrupted (CPU) run still compares
    # the rows on the same folds
    runs = [(key, sub, splits, test, split_of(folds, sub, splits, test)) for sub, splits, test in jobs for key in keys]
    results: dict[str, list[dict[str, Any]]] = {key: [] for key in keys}
    dirs: dict[str, list[Path]] = {key: [] for key in keys}  # the run folder of each result, for its cost
    if only_folds is not None:  # the other folds: reported where they have finished, never trained here
        chosen = {f"fold{k}" for k in only_folds}
        for key, sub, splits, test, split in runs:
            run_dir = _run_dir(out, key, sub)
            if sub not in chosen and (run_dir / "eval.json").is_file():
                results[key].append(_run_one(base, key, run_dir, splits, test, device, split))  # checked, then read
                dirs[key].append(run_dir)
        runs = [r for r in runs if r[1] in chosen]
    summary = report(out, results, dirs, tables, folds, base, keys)
    left = sum(not (_run_dir(out, key, sub) / "eval.json").is_file() for key, sub, *_ in runs)
    parallel = min(parallel, left)  # the CPUs shared out among the runs to train, not among idle workers
    if parallel <= 1:
        for key, sub, splits, test, split in runs:
            print(f"ablate: {key} {sub}".rstrip(), flush=True)
            results[key].append(_run_one(base, key, _run_dir(out, key, sub), splits, test, device, split))
            dirs[key].append(_run_dir(out, key, sub))
            summary = report(out, results, dirs, tables, folds, base, keys)
    else:
        # Independent (row, fold) runs in separate processes: a small model leaves a GPU mostly idle
        # between kernel launches, so several trainings share it well. Results keep the serial order.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=parallel, mp_context=ctx, initializer=_set_threads,
                                 initargs=(worker_threads(parallel),)) as pool:
            futures = [(key, sub, pool.submit(_run_one, base, key, _run_dir(out, key, sub), splits, test, device,
                                              split))
                       for key, sub, splits, test, split in runs]
            for key, sub, fut in futures:
                results[key].append(fut.result())
                dirs[key].append(_run_dir(out, key, sub))
                print(f"ablate: {key} {sub} done ({len(results[key])}/{len(jobs)})".replace("  ", " "), flush=True)
                summary = report(out, results, dirs, tables, folds, base, keys)
    print((out / "ablation.md").read_text())
    return summary


def report(out: Path, results: dict[str, list[dict[str, Any]]], dirs: dict[str, list[Path]], tables: list[str],
           folds: int, base: TrainConfig, keys: list[str]) -> dict[str, Any]:
    """Write OUT/results.json and OUT/ablation.md from the runs finished so far (after each one, so that a run
    of days shows where it stands; `dirs`: each result's run folder); returns the per-row summary."""
    def fold_order(key: str) -> list[tuple[Path, dict[str, Any]]]:  # fold 0 first, however they finished
        pairs = zip(dirs.get(key, []), results.get(key, []), strict=True)
        return sorted(pairs, key=lambda p: int(p[0].name[4:]) if p[0].name.startswith("fold") else 0)

    ordered = {key: fold_order(key) for key in keys}
    summary = {key: aggregate([r for _, r in ordered[key]]) for key in keys}
    cost = {key: row_cost([d for d, _ in ordered[key]]) for key in keys}
    runs = {key: [{"run": d.name, **r} for d, r in ordered[key]] for key in keys}  # each names its fold
    atomicfile.write_text(out / "results.json", jsonfile.dumps(
        {"folds": folds, "seed": base.seed, "rows": summary, "cost": cost, "runs": runs}, indent=2) + "\n")
    atomicfile.write_text(out / "ablation.md", markdown(summary, tables, folds, base, cost))
    return summary


def run_cost(run_dir: Path) -> dict[str, Any]:
    """Epochs and training seconds of one run folder, summed over its `log.jsonl` (so every sitting of a
    resumed run counts, whichever code wrote it), and the machine that finished it (`best.pt`'s training)."""
    import torch

    log = run_dir / "log.jsonl"
    lines = [json.loads(x) for x in log.read_text().splitlines() if x.strip()] if log.is_file() else []
    host = None
    done, best = run_dir / "eval.json", run_dir / "best.pt"
    if done.is_file():  # a kept run travels without its checkpoints (scripts/keep_runs.py)
        host = (json.loads(done.read_text()).get("trained_on") or {}).get("host")
    if host is None and best.is_file():
        host = torch.load(best, map_location="cpu", weights_only=True).get("training", {}).get("host")
    return {"epochs": len(lines), "train_s": round(sum(float(x.get("epoch_s", 0.0)) for x in lines), 1),
            "host": host}


def row_cost(run_dirs: list[Path]) -> dict[str, Any]:
    """A row's cost over its finished folds: how many, epochs each, mean training minutes per fold, hosts."""
    runs = [run_cost(d) for d in run_dirs]
    secs = [r["train_s"] for r in runs]
    return {"folds_done": len(runs), "folds": [d.name for d in run_dirs],
            "epochs": sorted({r["epochs"] for r in runs}),
            "train_min_per_fold": round(float(np.mean(secs)) / 60, 1) if secs else None,
            "hosts": sorted({r["host"] for r in runs if r["host"]})}


def _metric(run: dict[str, Any], head: str, name: str) -> float:
    """One metric of one eval.json result (`evaluate`'s, with `also.recommended`); NaN when absent."""
    m = run["metrics"][head]
    if name.endswith("_rec") or name == "t_rec":
        m = run.get("also", {}).get("recommended", {}).get(head)
        if m is None:
            return math.nan
        if name == "t_rec":
            return float(m["threshold"])
        name = name[:-4]
    if name in ("TPR", "TNR"):
        name = f"{name}_{m.get('threshold', DEFAULT_THRESHOLD):g}"
    v = m.get(name)
    return math.nan if v is None else float(v)


def aggregate(runs: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per head and metric: [mean, std] over runs (folds; `evaluate` results), ignoring NaN."""
    agg: dict[str, dict[str, list[float]]] = {}
    for head in HEADS:
        agg[head] = {}
        for name in METRIC_KEYS:
            vals = np.array([_metric(r, head, name) for r in runs], np.float64)
            vals = vals[~np.isnan(vals)]
            agg[head][name] = [float(vals.mean()), float(vals.std())] if vals.size else [math.nan, math.nan]
    return agg


def markdown(summary: dict[str, Any], tables: list[str], folds: int, base: TrainConfig,
             cost: dict[str, dict[str, Any]] | None = None) -> str:
    """The tables, one per head; with `cost` (`row_cost` per row), each row also says its folds done and
    its mean training minutes per fold."""
    cost = cost or {}
    from linewatch.model.train import RECIPES

    recipe = ", ".join(f"{k} {getattr(base, k)}" for k in RECIPES["paper"])
    lines = [
        f"Data `{base.data}`; epochs {base.epochs_seg}+{base.epochs_cls}, batch {base.batch}, seed {base.seed}; "
        f"recipe of every row unless its key adds an option: {recipe}; "
        + (f"{folds}-fold cross-validation (mean ± std)." if folds else "test split."),
        "",
    ]
    groups = [TABLES[t] for t in tables if t in TABLES]
    single = [(t, t) for t in tables if t not in TABLES]
    if single:
        groups.append(("Rows", single))
    for title, rows in groups:
        for head in HEADS:
            lines += [f"### {title}: {head}", "",
                      "| network | AP_pos | AP_neg | TPR_0.7 | TNR_0.7 | TPR_rec | TNR_rec | t_rec | runs | train min/run |",
                      "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
            for label, key in rows:
                cells = []
                for name in METRIC_KEYS:
                    mean, std = summary[key][head][name]
                    if math.isnan(mean):
                        cells.append("—")
                    elif name == "t_rec":
                        cells.append(f"{mean:.3f}" + (f" ± {std:.3f}" if folds else ""))
                    else:
                        cells.append(f"{100 * mean:.1f}" + (f" ± {100 * std:.1f}" if folds else ""))
                c = cost.get(key, {})
                done = f"{c['folds_done']}/{folds or 1}" if c else "—"
                if c and folds and 0 < c["folds_done"] < folds:  # which ones: rows may differ
                    done += " (" + ",".join(f.removeprefix("fold") for f in c["folds"]) + ")"
                cells.append(done)
                cells.append(f"{c['train_min_per_fold']:.1f}" if c.get("train_min_per_fold") is not None else "—")
                lines.append(f"| {label} | " + " | ".join(cells) + " |")
            lines.append("")
    return "\n".join(lines)

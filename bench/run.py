"""The snapshot engine benchmark (``make bench``): all six measurements of docs/performance.md side by side.

    NETLAPSE_DATA_DIR=.data .venv/bin/python -m bench.run [--quick]

1. paper-cnn on mnist-10k, SGD: the same run (one epoch, from the same initial weights) with no capture,
   netlapse (lossless, every step), TensorBoard ``add_histogram`` of every parameter every step, a
   ``wandb.watch``-style 64-bin ``torch.histc`` of every parameter every step, and ``torch.save(state_dict)``
   every step into the same store; runs interleaved round by round (rotating who goes first). Two slowdowns
   against no capture: the training loop (per step) and the whole run, until the recorder is closed (for
   netlapse: the last snapshot committed, the tape complete; a writer still draining counts).
2. Bytes per snapshot / raw float32, lossless at ingest and after compaction, SGD+momentum and Adam; lossy
   mode's ratio and worst error; the order-0 entropy of the best residual as the floor for lossless coding.
3. Through the HTTP API of a private stack: diff of conv1/fc1 between random step pairs (cold = result not
   cached, warm = cached), 16 random fc1 elements' trajectory, before and after compaction (sent as the
   analyzer's Celery task); also reads of fc1 at random steps from a brand-new reader (nothing cached).
4. Event latency trainer -> WebSocket client, from the events of that run.
5. Writer throughput (raw MB/s with nothing else running; and its own time per snapshot while training) and
   the fraction of training time spent waiting on backpressure; the encoder alone per thread against release
   0.1.0's (bench/bench_codec.py, also written to bench/results/codec.json).
6. wide-cnn (~25 M parameters) captured every batch: slowdown, bytes per snapshot, peak RSS (a process per
   variant, interleaved).

Prints a table and writes bench/results/engine.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parent.parent
RESULTS = REPO / "bench" / "results" / "engine.json"
TARGETS = {
    "slowdown": 0.05,
    "ingest_ratio": 0.5,
    "compacted_ratio": 0.3,
    "diff_p50_s": 0.100,
    "trajectory_p50_s": 0.050,
    "event_p50_s": 0.100,
    "lossy_compression": 10.0,
}


def log(msg: str) -> None:
    print(msg, flush=True)


def wide(steps: int, batch: int, rounds: int) -> dict[str, Any]:
    """wide-cnn in one subprocess per variant run, none/capture interleaved."""
    runs: dict[str, list[dict[str, Any]]] = {"none": [], "capture": []}
    for r in range(rounds):
        for mode in ("none", "capture") if r % 2 == 0 else ("capture", "none"):
            p = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "bench.bench_capture",
                    "--wide",
                    mode,
                    "--steps",
                    str(steps),
                    "--batch",
                    str(batch),
                ],
                cwd=REPO,
                capture_output=True,
                text=True,
                check=True,
            )
            res = json.loads(p.stdout.strip().splitlines()[-1])
            runs[mode].append(res)
            log(
                f"  wide-cnn {mode}: {res['seconds'] / steps:.2f}s/step, peak RSS {res['peak_rss_mb']:.0f} MB"
            )
    none_s = sum(x["seconds"] for x in runs["none"])
    cap_s = sum(x["seconds"] for x in runs["capture"])
    cap = runs["capture"]
    snaps = sum(x["steps"] for x in cap)
    return {
        "params": cap[0]["params"],
        "batch_size": batch,
        "steps_per_run": steps,
        "rounds": rounds,
        "step_seconds_none": none_s / (steps * rounds),
        "step_seconds_capture": cap_s / (steps * rounds),
        "slowdown": cap_s / none_s - 1,
        "bytes_per_snapshot": sum(x["stored_bytes"] for x in cap) / snaps,
        "raw_bytes_per_snapshot": sum(x["raw_bytes"] for x in cap) / snaps,
        "ratio": sum(x["stored_bytes"] for x in cap) / sum(x["raw_bytes"] for x in cap),
        "wait_fraction": sum(x["wait_seconds"] for x in cap) / cap_s,
        "peak_rss_mb_none": max(x["peak_rss_mb"] for x in runs["none"]),
        "peak_rss_mb_capture": max(x["peak_rss_mb"] for x in cap),
        "writer_seconds_per_snapshot": sum(x["encode_seconds"] + x["commit_seconds"] for x in cap) / snaps,
        "runs": runs,
    }


def fmt_pct(x: float) -> str:
    return f"{x * 100:+.1f} %"


def ms(x: float) -> str:
    return f"{x * 1e3:.0f} ms"


def table(res: dict[str, Any]) -> str:
    rows: list[tuple[str, str, str]] = []
    s = res.get("slowdown")
    if s and "steps_per_run" not in s:  # an older bench's per-round figures: re-measure them
        s = None
    if s:
        nl = s["netlapse"]
        rows.append(
            (
                f"1 paper-cnn, no capture ({s['rounds']} runs of {s['steps_per_run']} steps)",
                f"{s['none']['step_seconds'] * 1e3:.0f} ms/step, {s['none']['run_seconds']:.1f} s/run",
                "",
            )
        )
        for k in ("netlapse", "netlapse-thread", "tensorboard", "histc", "torch.save"):
            v = s.get(k)
            if v is None:  # results of an older bench without that variant
                continue
            label = f"{k} ({v['mode']})" if k == "netlapse" and "mode" in v else k
            rows.append(
                (
                    f"1 slowdown {label}: loop | whole run",
                    f"{fmt_pct(v['slowdown_loop'])} | {fmt_pct(v['slowdown_whole'])} (median run "
                    f"{fmt_pct(v['slowdown_loop_median_round'])} | {fmt_pct(v['slowdown_whole_median_round'])})",
                    "<= +5 % both, < tensorboard and histc" if k == "netlapse" else "",
                )
            )
        rows.append(
            (
                "1 netlapse: tail after the last step | CPU time",
                f"{nl['tail_seconds']:.2f} s/run | {fmt_pct(nl['cpu_overhead'])} of the process",
                "",
            )
        )
        sc = res.get("slowdown_spare_core")
        if sc:
            v = sc["netlapse"]
            rows.append(
                (
                    f"1 netlapse, torch on {sc['torch_threads']} core(s), one spare: loop | whole",
                    f"{fmt_pct(v.get('slowdown_loop', v['slowdown']))} | {fmt_pct(v['slowdown'])} "
                    f"({sc['none']['step_seconds'] * 1e3:.0f} ms/step)",
                    "",
                )
            )
        rows.append(
            (
                "1 stored/step: netlapse / TB / torch.save",
                "{:.2f} / {:.3f} / {:.2f} MB".format(
                    nl["bytes_per_snapshot"] / 1e6,
                    s["tensorboard"]["stored_bytes"] / max(1, nl["steps"]) / 1e6,
                    s["torch.save"]["stored_bytes"] / max(1, nl["steps"]) / 1e6,
                ),
                "",
            )
        )
    pb = res.get("slowdown_paired")
    if pb:
        arms = pb.get("arms") or {"netlapse": pb}  # results written before 2026-12-03 have one arm
        for name, arm in arms.items():
            mode = f" ({arm['mode']})" if arm.get("mode") else ""
            rows.append(
                (
                    f"1 {name}{mode}, capture on/off in {pb['block_steps']}-step blocks of one run "
                    f"({pb['cycles']} cycles)",
                    f"{fmt_pct(arm['slowdown'])} (median cycle {fmt_pct(arm['slowdown_median_cycle'])}, "
                    f"{pb['step_seconds_off'] * 1e3:.0f} ms/step off); writer "
                    f"{arm['writer_cpu_seconds_per_snapshot'] * 1e3:.1f} ms CPU/snapshot, "
                    f"wait {arm['wait_seconds']:.2f} s",
                    "<= +5 %" if name == "netlapse" else "",
                )
            )
    for key in ("ratio_sgd", "ratio_adam"):
        r = res.get(key)
        if r:
            o = r["optimizer"]["optimizer"]
            rows.append((f"2 {o}: stored/raw at ingest", f"{r['ingest_ratio']:.3f}", "<= 0.5"))
            rows.append((f"2 {o}: stored/raw after compaction", f"{r['compacted_ratio']:.3f}", "<= 0.3"))
            rows.append(
                (f"2 {o}: entropy floor (order-0, best residual)", f"{r['entropy_floor_ratio']:.3f}", "")
            )
            for lo in r["lossy"]:
                rows.append(
                    (
                        f"2 {o}: lossy, rel error {lo['rel_error_setting']:g}",
                        f"{lo['compression']:.1f}x smaller, max err {lo['max_abs_error_over_scale']:.2e} of scale",
                        ">= 10x",
                    )
                )
    a = res.get("api")
    if a:
        for phase in ("before_compaction", "after_compaction"):
            p = a[phase]
            tag = "before" if phase.startswith("before") else "after"
            for name in ("conv1.weight", "fc1.weight"):
                d = p[f"diff_{name}"]
                rows.append(
                    (
                        f"3 diff {name.split('.')[0]} ({tag}) cold | warm",
                        f"p50 {ms(d['cold']['p50'])} p95 {ms(d['cold']['p95'])} | p50 {ms(d['warm']['p50'])} p95 {ms(d['warm']['p95'])}",
                        "p50 <= 100 ms",
                    )
                )
            t = p["trajectory_fc1_16"]
            rows.append(
                (
                    f"3 trajectory 16 fc1 elems x {a['steps']} steps ({tag})",
                    f"p50 {ms(t['p50'])} p95 {ms(t['p95'])}",
                    "p50 <= 50 ms (after)" if tag == "after" else "",
                )
            )
            c = p["cold_reader_fc1"]
            rows.append(
                (f"3 fc1 read, brand-new reader ({tag})", f"p50 {ms(c['p50'])} p95 {ms(c['p95'])}", "")
            )
        ev = a["events"]["all"]
        rows.append(
            (
                "4 event trainer -> WebSocket",
                f"p50 {ms(ev['p50'])} p95 {ms(ev['p95'])} (n={ev['n']})",
                "p50 <= 100 ms",
            )
        )
    cd = res.get("codec")
    if cd:
        for o in ("sgd", "adam"):
            c = cd[o]
            names = [k for k in ("release-0.1.0", "native", "native+sha256", "zstd", "torch-cpu") if k in c]
            rows.append(
                (
                    f"5 encoder per thread, {o}: " + " | ".join(names),
                    " | ".join(
                        f"{c[k]['mb_per_s_thread_median']:.0f} MB/s ({c[k]['ratio']:.3f})" for k in names
                    ),
                    ">= 3x release" if "release-0.1.0" in c else "",
                )
            )
        rnd = cd["random_every_step"]
        rows.append(
            (
                "5 random weights every step: stored/raw",
                " | ".join(f"{k} {v['ratio']:.3f}" for k, v in rnd.items()),
                "<= 1.0",
            )
        )
    w = res.get("writer")
    if w:
        for k, v in w.items():
            rows.append(
                (
                    f"5 writer alone, {k.replace('_', ' ')}",
                    f"{v['mb_per_s']:.0f} MB/s ({v['ms_per_snapshot']:.0f} ms/snapshot)",
                    "",
                )
            )
    if s:
        nl = s["netlapse"]
        rows.append(
            (
                "5 writer while training, per snapshot",
                f"{nl['writer_cpu_seconds_per_snapshot'] * 1e3:.0f} ms CPU ({nl['writer_seconds_per_snapshot'] * 1e3:.0f} ms wall); "
                f"copy {nl['copy_seconds_per_snapshot'] * 1e3:.1f} ms on the loop",
                "",
            )
        )
        rows.append(("5 backpressure wait / training time", f"{nl['wait_fraction'] * 100:.2f} %", ""))
    wd = res.get("wide")
    if wd:
        rows.append(
            (
                f"6 wide-cnn {wd['params'] / 1e6:.1f}M params, batch {wd['batch_size']}",
                f"slowdown {fmt_pct(wd['slowdown'])}, {wd['bytes_per_snapshot'] / 1e6:.1f} MB/snapshot (ratio {wd['ratio']:.3f})",
                "",
            )
        )
        rows.append(
            (
                "6 wide-cnn peak RSS none | capture",
                f"{wd['peak_rss_mb_none']:.0f} | {wd['peak_rss_mb_capture']:.0f} MB; wait {wd['wait_fraction'] * 100:.1f} %",
                "bounded",
            )
        )
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    lines = [f"{'what'.ljust(w1)}  {'measured'.ljust(w2)}  target", "-" * (w1 + w2 + 20)]
    lines += [f"{a_.ljust(w1)}  {b.ljust(w2)}  {c}" for a_, b, c in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="fewer steps everywhere (a smoke run, not for the README)"
    )
    ap.add_argument(
        "--skip",
        default="",
        help="comma-separated parts to skip: slowdown,spare,paired,ratio,writer,codec,api,wide",
    )
    ap.add_argument("--rounds", type=int, default=3, help="rounds of the slowdown runs (one epoch each)")
    ap.add_argument(
        "--paired-cycles",
        type=int,
        default=20,
        help="cycles of 8-step blocks, off / each netlapse mode / back (part paired)",
    )
    ap.add_argument("--out", type=Path, default=RESULTS)
    ap.add_argument(
        "--merge",
        action="store_true",
        help="keep the parts of an existing --out file that this run skips (re-measure some parts only); "
        "env.parts_measured_at says when each part was measured",
    )
    args = ap.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    data_dir = Path(os.environ.get("NETLAPSE_DATA_DIR", REPO / ".data")).resolve()
    os.environ["NETLAPSE_DATA_DIR"] = str(data_dir)
    if not (data_dir / "datasets" / "mnist-10k.npz").exists():
        print(f"bench: {data_dir}/datasets/mnist-10k.npz not found; run `make setup`", file=sys.stderr)
        return 2
    torch.set_num_threads(os.cpu_count() or 1)
    from bench import bench_api, bench_capture

    q = args.quick
    t_start = time.perf_counter()
    load_start = os.getloadavg()[0]
    res: dict[str, Any] = {}
    previous: dict[str, Any] = {}
    if args.merge and args.out.exists():
        previous = json.loads(args.out.read_text())
    if "slowdown" not in skip:
        log("(1, 5) training slowdown, the same run per variant, interleaved ...")
        res["slowdown"] = bench_capture.bench_slowdown(
            rounds=2 if q else args.rounds, steps_per_run=6 if q else None, batch=128, log=log
        )
        cores = os.cpu_count() or 1
        if cores > 1 and "spare" not in skip:
            log(f"(1) the same with torch on {cores - 1} of {cores} cores (a core left for the writer) ...")
            res["slowdown_spare_core"] = bench_capture.bench_slowdown(
                rounds=2,
                steps_per_run=6 if q else None,
                batch=128,
                log=log,
                variants=[bench_capture.Variant, bench_capture.NetlapseVariant],
                torch_threads=cores - 1,
            )
    if "paired" not in skip:
        log("(1) capture off / on in blocks of one continuous run ...")
        res["slowdown_paired"] = bench_capture.bench_paired_blocks(
            cycles=2 if q else args.paired_cycles, block=8, batch=128, log=log
        )
    snaps = None
    if "ratio" not in skip:
        for key, opt in (("ratio_sgd", bench_capture.SGD), ("ratio_adam", bench_capture.ADAM)):
            log(f"(2) bytes per snapshot, {opt['optimizer']} ...")
            r = bench_capture.bench_ratio(opt, steps=12 if q else 48, batch=128, rel_errors=(1e-3, 1e-2))
            if snaps is None:
                snaps = r["snapshots"][-24:]
            del r["snapshots"]
            res[key] = r
    if "writer" not in skip and snaps is not None:
        log("(5) writer throughput alone ...")
        res["writer"] = bench_capture.bench_writer(snaps)
    snaps = None
    if "codec" not in skip:
        log("(5) the encoder alone per thread: release 0.1.0 vs numpy vs torch on the CPU ...")
        from bench import bench_codec

        codec_out = REPO / "bench" / "results" / ("codec-quick.json" if q else "codec.json")
        bench_codec.main(
            ["--steps", "8" if q else "24", "--rounds", "2" if q else "3", "--out", str(codec_out)]
        )
        res["codec"] = json.loads(codec_out.read_text())
    if "api" not in skip:
        log("(3, 4) API: diffs, trajectories, events, compaction ...")
        res["api"] = bench_api.bench_api(epochs=1, pairs=8 if q else 30, log=log)
    if "wide" not in skip:
        log("(6) wide-cnn, one process per variant ...")
        res["wide"] = wide(steps=2 if q else 5, batch=16, rounds=2)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    measured = {k: now for k in res}
    if previous:
        old_env = previous.get("env", {})
        old_when = old_env.get("parts_measured_at") or {
            k: old_env.get("finished_at") for k in previous if k not in ("env", "targets", "table")
        }
        for k, v in previous.items():
            if k not in res and k not in ("env", "targets", "table"):
                res[k] = v
                measured[k] = old_when.get(k)
    res["env"] = {
        "parts_measured_at": measured,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_avg_1m_start": load_start,
        "load_avg_1m": os.getloadavg()[0],
        "quick": q,
        "wall_seconds": time.perf_counter() - t_start,
        "finished_at": now,
    }
    res["targets"] = TARGETS
    text = table(res)
    res["table"] = text
    print()
    print(text)
    print(f"\n{res['env']['cpus']} CPUs, torch {torch.__version__}, {res['env']['wall_seconds']:.0f} s")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=1, default=float))
    print(f"wrote {args.out.relative_to(REPO) if args.out.is_relative_to(REPO) else args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

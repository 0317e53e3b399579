#!/usr/bin/env python3
"""Tests bench_ratio.py's verdicts on fixture JMH files shaped like the benchmark tool's export
(`package.benchmark.KVCacheBenchmarks.Engine_<operation>`, wall clock in microseconds per
measurement of 1000 operations, or of one for decode-step-scores). Each case writes a run's
directories, runs the script and checks its exit status and the lines it prints. Ends with
"bench_ratio: N passed, M failed"; exits non-zero when a case fails.
"""
import json, os, subprocess, sys, tempfile

SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bench_ratio.py")


def write_run(directory, microseconds, percentile="50.0"):
    """One JMH file in `directory`: (impl, operation) -> wall-clock microseconds per measurement."""
    os.makedirs(directory, exist_ok=True)
    elements = []
    for (impl, operation), us in microseconds.items():
        elements.append({
            "benchmark": f"package.benchmark.KVCacheBenchmarks.{impl}_{operation}",
            "mode": "thrpt",
            "secondaryMetrics": {
                "Time (wall clock)": {"scorePercentiles": {percentile: us, "99.0": us * 3}, "scoreUnit": "us"},
                "Malloc (total)": {"scorePercentiles": {percentile: 2000.0, "99.0": 2000.0}},
            },
        })
    with open(os.path.join(directory, "Current_run.jmh.json"), "w") as f:
        json.dump(elements, f)


def run_case(main, rounds, op="decode-step-scores", more_rounds=()):
    """Writes `main`, one directory per entry of `rounds` (runs of `op` alone) and per
    (op, round) of `more_rounds`, runs the script: (status, output)."""
    with tempfile.TemporaryDirectory() as out:
        write_run(os.path.join(out, "main"), main)
        for i, r in enumerate(rounds, 1):
            write_run(os.path.join(out, f"round-{op}-{i}"), r)
        for other, rs in more_rounds:
            for i, r in enumerate(rs, 1):
                write_run(os.path.join(out, f"round-{other}-{i}"), r)
        p = subprocess.run([sys.executable, SCRIPT, "50.0", out], capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr


def decode(engine_us, baseline_us):
    return {("Engine", "decode-step-scores"): engine_us, ("Baseline", "decode-step-scores"): baseline_us}


FAST = {("Engine", "allocate+free"): 20.0, ("Baseline", "allocate+free"): 40.0,   # 20 ns: 50 M pairs/s
        ("Engine", "append"): 60.0, ("Baseline", "append"): 90.0}                  # 60 ns/token


def line(output, prefix):
    return next((l for l in output.splitlines() if l.startswith(prefix)), "")


failures, checked = [], []


def check(name, condition, output):
    checked.append(name)
    if condition:
        print(f"ok   {name}")
    else:
        print(f"FAIL {name}\n{output}")
        failures.append(name)


# The median of the rounds is judged, not the mean and not the main run's pair.
status, output = run_case({**FAST, **decode(1000.0, 1000.0)},
                          [decode(1500.0, 1000.0), decode(2600.0, 1000.0), decode(1800.0, 1000.0)])
check("median of rounds passes though one round is over 2x", status == 0
      and line(output, "PASS decode-step-scores").startswith("PASS decode-step-scores: 1.80x")
      and "median of 3 same-run rounds: 1.50, 2.60, 1.80" in output, output)
check("absolute targets from the main run", "PASS allocate+free: 50.0 M pairs/s" in output
      and "PASS append: 60.0 ns/token" in output, output)
check("decode-step ns per operation is per measurement (one step each)",
      line(output, "decode-step-scores").split()[1:3] == ["1000000.00", "1000000.00"], output)

status, output = run_case({**FAST, **decode(1000.0, 1000.0)},
                          [decode(2100.0, 1000.0), decode(1200.0, 1000.0), decode(2400.0, 1000.0)])
check("median over 2x fails though the main run's pair is 1x", status == 1
      and line(output, "FAIL decode-step-scores").startswith("FAIL decode-step-scores: 2.10x"), output)

# Rounds are read in numeric order (round10 after round9) and a round without its baseline is left out.
rounds = [decode(1000.0 + 100.0 * i, 1000.0) for i in range(1, 11)]
rounds[3] = {("Engine", "decode-step-scores"): 9000.0}
status, output = run_case({**FAST, **decode(1000.0, 1000.0)}, rounds)
check("rounds in numeric order, incomplete round skipped", status == 0
      and "median of 9 same-run rounds: 1.10, 1.20, 1.30, 1.50, 1.60, 1.70, 1.80, 1.90, 2.00" in output
      and line(output, "PASS decode-step-scores").startswith("PASS decode-step-scores: 1.60x"), output)

status, output = run_case({("Engine", "append"): 250.0, ("Baseline", "append"): 90.0}, [])
check("slow append fails, unmeasured targets skip", status == 1 and "FAIL append: 250.0 ns/token" in output
      and "SKIP allocate+free: not measured" in output and "SKIP decode-step-scores: not measured" in output, output)

# A third implementation, VLLM: its ns, engine/vllm and malloc/op close the row; an operation
# measured only by Engine and VLLM (trace-replay) is listed with '-' for the baseline; VLLM
# results never feed the targets.
status, output = run_case({**FAST, ("VLLM", "allocate+free"): 80.0,
                           ("Engine", "trace-replay"): 3000.0, ("VLLM", "trace-replay"): 1500.0,
                           ("VLLM", "append"): 1000.0}, [])
row = line(output, "allocate+free").split()
check("vllm columns: ns, engine/vllm (not vllm/engine), malloc/op", status == 0
      and row[1:5] == ["20.00", "40.00", "0.500", "2.00x"] and row[7:10] == ["80.00", "0.250", "2.00"], output)
row = line(output, "trace-replay").split()
check("engine+vllm only operation is listed", row[1:3] == ["3000.00", "-"] and row[3] == "-"
      and row[7:9] == ["1500.00", "2.000"], output)
check("vllm does not feed the targets", "PASS append: 60.0 ns/token" in output
      and "PASS allocate+free: 50.0 M pairs/s" in output, output)

# A VLLM variant (`VLLM sha256 <operation>`: the pool hashing blocks with SHA-256) gets a row of
# its own, `sha256 <operation>`, whose engine column is the plain operation's engine: the table
# shows engine / vLLM-sha256 beside engine / vLLM.
status, output = run_case({**FAST, ("Engine", "prefix lookup"): 7000.0, ("Baseline", "prefix lookup"): 5000.0,
                           ("VLLM", "prefix lookup"): 6000.0, ("VLLM", "sha256 prefix lookup"): 35000.0}, [])
row = line(output, "prefix lookup").split()
check("the plain vllm row is unchanged beside a variant", status == 0
      and row[2:4] == ["7000.00", "5000.00"] and row[8:10] == ["6000.00", "1.167"], output)
row = line(output, "sha256 prefix lookup").split()
check("vllm sha256 row: the engine of the plain operation against the sha256 pool, no baseline",
      row[3:5] == ["7000.00", "-"] and row[9:11] == ["35000.00", "0.200"], output)

# trace-replay's rounds give an engine/vLLM median that is reported and never judged (a 3.00
# round passes), beside decode-step-scores' own rounds.
trace = lambda e, v: {("Engine", "trace-replay"): e, ("VLLM", "trace-replay"): v}
status, output = run_case({**FAST, **decode(1000.0, 1000.0), **trace(1000.0, 1000.0)},
                          [decode(1500.0, 1000.0), decode(1700.0, 1000.0), decode(1600.0, 1000.0)],
                          more_rounds=[("trace-replay", [trace(900.0, 1000.0), trace(3000.0, 1000.0), trace(600.0, 1000.0)])])
check("trace-replay rounds: engine/vLLM median reported, not judged", status == 0
      and "INFO trace-replay: engine/vLLM 0.90 per request (median of 3 same-run rounds: 0.90, 3.00, 0.60)" in output, output)
check("the decode rounds are judged beside them", "median of 3 same-run rounds: 1.50, 1.70, 1.60)" in output
      and line(output, "PASS decode-step-scores").startswith("PASS decode-step-scores: 1.60x"), output)
status, output = run_case({**FAST, **trace(1000.0, 1000.0)}, [])
check("without trace-replay rounds, no vLLM median (the main run's pair is not used)", status == 0
      and "INFO trace-replay" not in output, output)

# The normalised-sums pair has its own rounds and target: a failing median there fails the
# run while decode-step-scores passes.
norm = lambda e, b: {("Engine", "decode-step-norm"): e, ("Baseline", "decode-step-norm"): b}
status, output = run_case({**FAST, **decode(1000.0, 1000.0), **norm(1000.0, 1000.0)},
                          [decode(1500.0, 1000.0), decode(1400.0, 1000.0), decode(1600.0, 1000.0)],
                          more_rounds=[("decode-step-norm", [norm(2500.0, 1000.0), norm(1900.0, 1000.0), norm(2200.0, 1000.0)])])
check("decode-step-norm is judged on its own rounds", status == 1
      and line(output, "PASS decode-step-scores").startswith("PASS decode-step-scores: 1.50x")
      and line(output, "FAIL decode-step-norm").startswith("FAIL decode-step-norm: 2.20x")
      and "median of 3 same-run rounds: 2.50, 1.90, 2.20)" in output, output)

# The per-head and episodic pairs: their own rounds, ns per operation per measurement (one
# step each), both judged against their own baselines (per head: the plain sum into per-head rows).
head = lambda e, b: {("Engine", "decode-step-head"): e, ("Baseline", "decode-step-head"): b}
epi = lambda e, b: {("Engine", "decode-step-epi"): e, ("Baseline", "decode-step-epi"): b}
status, output = run_case({**FAST, **head(1000.0, 1000.0), **epi(1000.0, 1000.0)}, [],
                          more_rounds=[("decode-step-head", [head(1900.0, 1000.0), head(1600.0, 1000.0), head(4700.0, 1000.0)]),
                                       ("decode-step-epi", [epi(2100.0, 1000.0), epi(2300.0, 1000.0), epi(1000.0, 1000.0)])])
check("decode-step-head and decode-step-epi are judged on their own rounds", status == 1
      and line(output, "PASS decode-step-head").startswith("PASS decode-step-head: 1.90x")
      and "median of 3 same-run rounds: 1.90, 1.60, 4.70)" in output
      and line(output, "FAIL decode-step-epi").startswith("FAIL decode-step-epi: 2.10x")
      and line(output, "decode-step-head").split()[1:3] == ["1000000.00", "1000000.00"]
      and line(output, "decode-step-epi").split()[1:3] == ["1000000.00", "1000000.00"]
      and "SKIP decode-step-scores: not measured" in output, output)

# Per head, the per-layer plain sum measured in the same rounds (`PerLayer`) gives an INFO
# median that is never judged (4.00x here), while the per-head baseline's median fails the run;
# without PerLayer results there is no INFO line.
layer = lambda p: {("PerLayer", "decode-step-head"): p}
status, output = run_case({**FAST, **head(1000.0, 1000.0), **layer(250.0)},
                          [{**head(2200.0, 1000.0), **layer(550.0)}, {**head(2500.0, 1000.0), **layer(500.0)},
                           {**head(1800.0, 1000.0), **layer(600.0)}], op="decode-step-head")
check("decode-step-head fails over 2x of the per-head plain sum", status == 1
      and line(output, "FAIL decode-step-head").startswith("FAIL decode-step-head: 2.20x")
      and "median of 3 same-run rounds: 2.20, 2.50, 1.80)" in output, output)
check("decode-step-head against the per-layer plain sum is INFO, per round", "PASS decode-step-head" not in output
      and line(output, "INFO decode-step-head").startswith("INFO decode-step-head: 4.00x")
      and "(median of 3 same-run rounds: 4.00, 5.00, 3.00)" in line(output, "INFO decode-step-head"), output)
check("the PerLayer pass is not a table column or a baseline",
      line(output, "decode-step-head").split()[1:4] == ["1000000.00", "1000000.00", "1.000"], output)
status, output = run_case({**FAST, **head(1000.0, 1000.0)}, [head(1500.0, 1000.0)], op="decode-step-head")
check("without PerLayer results, no INFO line", status == 0 and "INFO decode-step-head" not in output
      and line(output, "PASS decode-step-head").startswith("PASS decode-step-head: 1.50x"), output)

# The index dump is one dump per measurement, reported from the main run (INFO, no verdict).
status, output = run_case({**FAST, ("Engine", "index-dump"): 8192.0, ("Baseline", "index-dump"): 4096.0}, [])
check("the index dump is INFO: ms per dump, ns per listed block, the ratio", status == 0
      and line(output, "INFO index-dump").startswith("INFO index-dump: 8.19 ms per dump of 81,920 blocks (100.0 ns/block")
      and "2.00x listing a Dictionary" in output and "PASS index-dump" not in output, output)
with tempfile.TemporaryDirectory() as out:  # the whole suite runs the pair apart: main-dump/ joins the table
    write_run(os.path.join(out, "main"), FAST)
    write_run(os.path.join(out, "main-dump"), {("Engine", "index-dump"): 8192.0, ("Baseline", "index-dump"): 4096.0})
    p = subprocess.run([sys.executable, SCRIPT, "50.0", out], capture_output=True, text=True)
    output = p.stdout + p.stderr
    check("the index-dump pair of main-dump/ joins the main run's table", p.returncode == 0
          and line(output, "INFO index-dump").startswith("INFO index-dump: 8.19 ms per dump")
          and line(output, "index-dump").split()[1:3] == ["8192000.00", "4096000.00"]
          and "PASS append: 60.0 ns/token" in output, output)
status, output = run_case(FAST, [])
check("without the index dump, no INFO line", status == 0 and "INFO index-dump" not in output, output)

status, output = run_case({}, [])
check("no results is a run failure", status == 2 and "no Engine/Baseline wall-clock results" in output, output)


# --router: a KVRouterBenchmarks run (names spelled as the benchmarks are, percentiles in us per
# decision or change), ring rounds and a replay.
def write_router_run(directory, results):
    """One JMH file in `directory`: benchmark name -> (p50, p90, p99) wall-clock microseconds."""
    os.makedirs(directory, exist_ok=True)
    elements = [{"benchmark": "package.benchmark.KVRouterBenchmarks." + name.replace(" ", "_"), "mode": "thrpt",
                 "secondaryMetrics": {"Time (wall clock)": {"scorePercentiles": {"50.0": p50, "90.0": p90, "99.0": p99},
                                                            "scoreUnit": "us"}}}
                for name, (p50, p90, p99) in results.items()]
    with open(os.path.join(directory, "Current_run.jmh.json"), "w") as f:
        json.dump(elements, f)


def run_router(main, ring_rounds=(), replay=None, route_rounds=()):
    """Writes `main`, `round-ring-N` per entry of `ring_rounds`, `round-route-N` per entry of
    `route_rounds` and, if given, `replay/` from (wall seconds, instances, policies); runs the
    script with --router: (status, output)."""
    with tempfile.TemporaryDirectory() as out:
        if main:
            write_router_run(os.path.join(out, "main"), main)
        for i, r in enumerate(ring_rounds, 1):
            write_router_run(os.path.join(out, f"round-ring-{i}"), r)
        for i, r in enumerate(route_rounds, 1):
            write_router_run(os.path.join(out, f"round-route-{i}"), r)
        if replay is not None:
            wall, instances, policies = replay
            os.makedirs(os.path.join(out, "replay"))
            with open(os.path.join(out, "replay", "replay.json"), "w") as f:
                json.dump({"trace": "mooncake_conversation_trace.jsonl", "requests": 12031, "instances": instances,
                           "policies": [{"policy": p, "wall_s": wall - 0.5} for p in policies]}, f)
            with open(os.path.join(out, "replay", "wall_s"), "w") as f:
                f.write(f"{wall:.3f}\n")
        p = subprocess.run([sys.executable, SCRIPT, "--router", "50.0", out], capture_output=True, text=True)
        return p.returncode, p.stdout + p.stderr


ROUTES = {"Route 64 instances dualmap": (0.7, 1.0, 1.4), "Route 64 instances overlap-cost": (1.8, 2.1, 2.5),
          "Route 64 instances round-robin": (0.1, 0.4, 1.0)}
status, output = run_router(ROUTES, replay=(4.2, 16, ["dualmap"]))
check("router: DualMap's p99 under 2 us passes, the others are INFO", status == 0
      and line(output, "PASS route-dualmap").startswith("PASS route-dualmap: p99 1.400 us")
      and "INFO route-overlap-cost: p50 1.800 us, p99 2.500 us per routing decision, not judged" in output and "INFO route-dualmap" not in output
      and line(output, "overlap-cost").split()[1:4] == ["1.800", "2.100", "2.500"], output)
check("router: a replay of one policy over 16 instances under 10 s passes, judged on the command's wall time",
      line(output, "PASS replay").startswith("PASS replay: dualmap over 16 instances, 12031 requests")
      and "4.20 s wall for the whole command" in output and "the replay itself 3.70 s" in output, output)

status, output = run_router({**ROUTES, "Route 64 instances dualmap": (0.7, 1.0, 2.0)}, replay=(4.2, 16, ["dualmap"]))
check("router: DualMap's p99 of 2 us fails though its p50 is 0.7 us", status == 1
      and line(output, "FAIL route-dualmap").startswith("FAIL route-dualmap: p99 2.000 us"), output)
# DualMap's p99 is judged on the median of its rounds alone (in numeric order), not the main run's.
dual = lambda p99: {"Route 64 instances dualmap": (0.6, 0.9, p99)}
status, output = run_router({**ROUTES, "Route 64 instances dualmap": (0.7, 1.0, 2.4)}, replay=(4.2, 16, ["dualmap"]),
                            route_rounds=[dual(x) for x in (1.1, 2.3, 1.3, 1.2, 2.2, 1.5, 1.4, 1.6, 1.7, 1.0)])
check("router: DualMap's p99 is the median of its rounds, though the main run's and two rounds are over 2 us", status == 0
      and line(output, "PASS route-dualmap").startswith("PASS route-dualmap: p99 1.450 us")
      and "median of 10 runs of it alone: 1.100, 2.300, 1.300, 1.200, 2.200, 1.500, 1.400, 1.600, 1.700, 1.000" in output, output)
status, output = run_router(ROUTES, replay=(4.2, 16, ["dualmap"]), route_rounds=[dual(x) for x in (2.1, 1.9, 2.2)])
check("router: a median of rounds at 2.1 us fails though the main run passes", status == 1
      and line(output, "FAIL route-dualmap").startswith("FAIL route-dualmap: p99 2.100 us"), output)
status, output = run_router({"Route 64 instances overlap-cost": (1.8, 2.1, 2.5)}, replay=(10.0, 16, ["dualmap"]))
check("router: a 10 s replay fails; without DualMap's decision it is skipped, and a slow other policy does not fail",
      status == 1 and line(output, "FAIL replay").startswith("FAIL replay: dualmap over 16 instances")
      and "SKIP route-dualmap: not measured" in output, output)
status, output = run_router(ROUTES, replay=(3.0, 8, ["dualmap"]))
check("router: a replay over other than 16 instances does not pass", status == 1 and line(output, "FAIL replay") != "", output)
status, output = run_router(ROUTES)
check("router: without a replay it is skipped", status == 0 and "SKIP replay: not run" in output, output)

# Ring pairs: merge/compact over rebuild per round (p50s), the median of the rounds in numeric
# order, INFO only (a slower merge does not fail), the main run's pair not used.
def ring(add_merge, add_rebuild, remove_compact=None, remove_rebuild=None, size="weight 1"):
    r = {f"Ring add 64th {size} merge": (add_merge, 0, 0), f"Ring add 64th {size} rebuild": (add_rebuild, 0, 0)}
    if remove_compact is not None:
        r.update({f"Ring remove 64th {size} compact": (remove_compact, 0, 0), f"Ring remove 64th {size} rebuild": (remove_rebuild, 0, 0)})
    return r
rounds = [ring(10.0 + i, 1000.0, 20.0, 1000.0) for i in range(10)]
rounds[4] = {"Ring add 64th weight 1 merge": (5.0, 0, 0)}
status, output = run_router({**ROUTES, **ring(1.0, 1000.0, 1.0, 1000.0), "Router remove 64th weight 1": (294.0, 300.0, 310.0)}, rounds)
check("router: ring ratios are medians of the rounds in numeric order, an incomplete round left out", status == 0
      and line(output, "INFO ring-add-weight-1").startswith("INFO ring-add-weight-1: merge/rebuild 0.0150 (66.7x faster)")
      and "(median of 9 same-run rounds: 0.0100, 0.0110, 0.0120, 0.0130, 0.0150, 0.0160, 0.0170, 0.0180, 0.0190)" in output
      and line(output, "INFO ring-remove-weight-1").startswith("INFO ring-remove-weight-1: compact/rebuild 0.0200 (50.0x faster)"), output)
check("router: other router benchmarks are listed, not judged", line(output, "Router remove 64th weight 1").split()[-2:] == ["294.000", "310.000"], output)
status, output = run_router({**ROUTES, **ring(1.0, 1000.0, size="weight 1-64")}, [ring(3000.0, 1000.0, size="weight 1-64")])
check("router: a merge slower than the rebuild is INFO, not a failure", status == 0
      and line(output, "INFO ring-add-weight-1-64").startswith("INFO ring-add-weight-1-64: merge/rebuild 3.0000 (0.3x faster)"), output)
status, output = run_router({**ROUTES, **ring(1.0, 1000.0)})
check("router: without ring rounds, no ring ratio (the main run's pair is not used)", status == 0 and "INFO ring" not in output, output)
status, output = run_router({**ROUTES, "Router observe 1024 events exact": (40.96, 50.0, 60.0),
                             "Dictionary observe 1024 events exact": (20.48, 30.0, 40.0)})
check("router: the KV-event pair is reported per event, as a ratio, not judged", status == 0
      and line(output, "INFO observe-events").startswith("INFO observe-events: 40.0 ns per event applied to the router's exact view,"
                                                         " 20.0 ns to a Dictionary (view/Dictionary 2.00;"), output)
status, output = run_router({**ROUTES, "Route and finish 64 instances overlap-cost": (0.9, 1.2, 1.6)})
check("router: overlap cost's route + finish is INFO, apart from the route-only policies", status == 0
      and line(output, "INFO route-finish-overlap-cost").startswith("INFO route-finish-overlap-cost: p50 0.900 us, p99 1.600 us per"
                                                                      " routing decision and the request's finish, not judged")
      and "INFO route-and" not in output, output)
status, output = run_router({**ROUTES, "Router observe 1024 events exact": (40.96, 50.0, 60.0)})
check("router: half of the KV-event pair gives no ratio", status == 0 and "INFO observe-events" not in output, output)
status, output = run_router({}, replay=(4.2, 16, ["dualmap"]))
check("router: no benchmark results is a run failure, a replay alone too", status == 2 and "no router wall-clock results" in output, output)

print(f"bench_ratio: {len(checked) - len(failures)} passed, {len(failures)} failed")
sys.exit(1 if failures else 0)

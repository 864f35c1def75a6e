"""`probation bench …`: the benchmarks (the code is in the top-level `bench` package)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from probation.cli.common import emit_result, quiet
from probation.cli.simulation import RateOpt

bench_app = typer.Typer(help="Benchmarks.", no_args_is_help=True)


@bench_app.command("geofence")
def bench_geofence(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (flat JSON object).")
    ] = None,
    cases: Annotated[int, typer.Option(help="Cases (4 own zones each, 200 shared).")] = 10_000,
    fixes: Annotated[int, typer.Option(help="Fixes per batch.")] = 100_000,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 1,
    uniform_mix: Annotated[
        bool, typer.Option(help="Daytime position mix all day (no one at home at night).")
    ] = False,
) -> None:
    """The numpy geofence engine against a shapely 2 reference, same workload, same run."""
    from bench.geofence import main

    argv = ["--cases", str(cases), "--fixes", str(fixes), "--seed", str(seed)]
    if uniform_mix:
        argv.append("--uniform-mix")
    if json_path is not None:
        argv += ["--json", str(json_path)]
    main(argv)


@bench_app.command("realgps")
def bench_realgps(
    json_path: Annotated[
        Path, typer.Option("--json", help="Also write the results here.")
    ] = Path("bench-results/realgps.json"),
    data: Annotated[
        Path | None, typer.Option(help="The development set (CSV files, gzip or not). Default: "
                                  "$PROBATION_REALGPS_DATA, else the shared/realgps folder "
                                  "beside the repository (or the one it was cloned from).")
    ] = None,
    files: Annotated[
        list[str] | None, typer.Option("--file", help="Only these files (name or stem).")
    ] = None,
) -> None:
    """The monitoring rules on real recorded GPS through broker, ingest and database:
    false alarms per person-day, duplicates, recall and delay per source."""
    from bench.realgps import main

    quiet()
    argv = ["--json", str(json_path)]
    if data is not None:
        argv += ["--data", str(data)]
    if files:
        argv += ["--files", *files]
    main(argv)


@bench_app.command("ingest")
def bench_ingest(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (flat JSON object).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="A throwaway database to use (its fixes table is truncated!). "
                     "Default: a private PostgreSQL, with TimescaleDB when installed."),
    ] = None,
    mqtt_url: Annotated[
        str | None, typer.Option(help="A broker to use. Default: a private mosquitto.")
    ] = None,
    scale: Annotated[
        float, typer.Option(help="Scale the volumes (1: 1,000,000 batched fixes, 100,000 "
                            "single-fix messages).")
    ] = 1.0,
    latency_seconds: Annotated[
        float, typer.Option(help="Length of the steady 2,000 fixes/s latency run.")
    ] = 20.0,
    durable: Annotated[
        bool, typer.Option(help="Private PostgreSQL with fsync and synchronous commit (as in "
                           "production); --no-durable turns them off.")
    ] = True,
    geofence: Annotated[
        bool, typer.Option(help="Instead: the worker of `probation ingest` (geofence, check-in "
                           "and rapid-mode stages) on the simulator's world, one fix per message.")
    ] = False,
    people: Annotated[int, typer.Option(help="--geofence: people (devices).")] = 5_000,
    fixes_per_device: Annotated[
        int, typer.Option(help="--geofence: backlog messages per device.")
    ] = 20,
    live_rate: Annotated[
        float, typer.Option(help="--geofence: also publish live at this many msgs/s (0: no).")
    ] = 10_000.0,
    live_seconds: Annotated[float, typer.Option(help="--geofence: length of the live run.")] = 30.0,
    alert_latency: Annotated[
        bool, typer.Option(help="Instead: publish → committed alert at idle (target p99 <= "
                           "300 ms), against publish → stored fix in the same run.")
    ] = False,
    repetitions: Annotated[int, typer.Option(help="--alert-latency: repetitions.")] = 100,
) -> None:
    """Throughput and latency of ingestion through a real broker into the real database."""
    from bench.ingest import BenchConfig, run_ingest_bench

    quiet()
    if alert_latency:
        from bench.alert_latency import AlertLatencyConfig, run_alert_latency_bench

        emit_result(run_alert_latency_bench(
            AlertLatencyConfig(repetitions=repetitions, durable=durable), out=typer.echo,
        ), json_path)
        return
    if geofence:
        from bench.ingest_geofence import GeofenceBenchConfig, run_geofence_bench

        result = run_geofence_bench(
            GeofenceBenchConfig(people=people, fixes_per_device=fixes_per_device,
                                live_rate=live_rate, live_seconds=live_seconds, durable=durable),
            out=typer.echo,
        )
        emit_result(result, json_path)
        return
    result = run_ingest_bench(
        BenchConfig(
            database_url=database_url, mqtt_url=mqtt_url,
            batched_fixes=max(50_000, int(1_000_000 * scale)),
            single_messages=max(5_000, int(100_000 * scale)),
            latency_seconds=latency_seconds, durable=durable,
        ),
        out=typer.echo,
    )
    emit_result(result, json_path)


@bench_app.command("scheduler")
def bench_scheduler(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (flat JSON object).")
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="An empty, throwaway database to fill. Default: a private "
                     "PostgreSQL, with TimescaleDB when installed."),
    ] = None,
    devices: Annotated[int, typer.Option(help="Assigned devices (one case and zone each).")] = 100_000,
    repeat: Annotated[int, typer.Option(help="Runs per pass (the median is reported).")] = 3,
    violations_pct: Annotated[
        float, typer.Option(help="Percent of devices that go silent, lose their fixes, or "
                            "are outside at the curfew start (each opens an alert).")
    ] = 0.2,
) -> None:
    """Time the silence and curfew-start passes over N assigned devices (target <= 1 s)."""
    from bench.scheduler import SchedulerBenchConfig, run_scheduler_bench

    quiet()
    result = run_scheduler_bench(
        SchedulerBenchConfig(devices=devices, repeat=repeat, database_url=database_url,
                             silent_pct=violations_pct, nofix_pct=violations_pct,
                             outside_pct=violations_pct),
        out=typer.echo,
    )
    emit_result(result, json_path)


@bench_app.command("api")
def bench_api(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (JSON object).")
    ] = Path("bench-results/api.json"),
    database_url: Annotated[
        str | None,
        typer.Option(help="An empty, throwaway database to fill (or one an earlier run "
                     "filled, to reuse). Default: a private PostgreSQL, with TimescaleDB."),
    ] = None,
    cases: Annotated[int, typer.Option(help="Active cases (50 per officer).")] = 2000,
    fixes: Annotated[int, typer.Option(help="Fixes in total, spread over the cases' devices.")] = 5_000_000,
    requests: Annotated[int, typer.Option(help="Caseload requests measured.")] = 1000,
    acks: Annotated[int, typer.Option(help="Alert acknowledgements measured.")] = 1000,
    durable: Annotated[
        bool, typer.Option(help="Private PostgreSQL with fsync and synchronous commit (as in "
                           "production); --no-durable turns them off.")
    ] = True,
) -> None:
    """Caseload page (p99 <= 50 ms), alert acknowledgement (p99 <= 30 ms) and a week's
    track (median <= 150 ms, against an hour of it) under load."""
    from bench.api import ApiBenchConfig, run_api_bench

    quiet()
    result = run_api_bench(
        ApiBenchConfig(cases=cases, fixes=fixes, caseload_requests=requests, acks=acks,
                       database_url=database_url, durable=durable),
        out=typer.echo,
    )
    emit_result(result, json_path)
    if not result["pass"]:
        raise typer.Exit(1)



@bench_app.command("console")
def bench_console(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (JSON object).")
    ] = Path("bench-results/console.json"),
    cases: Annotated[int, typer.Option(help="Active cases, each with a live marker.")] = 2000,
    rounds: Annotated[int, typer.Option(help="Sign-ins measured (a fresh browser context each).")] = 5,
    updates: Annotated[int, typer.Option(help="Position and alert updates measured.")] = 10,
) -> None:
    """The console in headless Chromium: caseload first paint (<= 1.5 s) and alert visible
    after commit (<= 1 s), with 2,000 cases and markers."""
    from bench.console import ConsoleBenchConfig, run_console_bench

    quiet()
    result = run_console_bench(ConsoleBenchConfig(cases=cases, rounds=rounds, updates=updates),
                               out=typer.echo)
    emit_result(result, json_path)
    if not result["pass"]:
        raise typer.Exit(1)


@bench_app.command("login")
def bench_login(
    json_path: Annotated[
        Path | None, typer.Option("--json", help="Also write the results here (JSON object).")
    ] = Path("bench-results/login.json"),
    seconds: Annotated[float, typer.Option(help="Length of each phase.")] = 20.0,
    legit: Annotated[int, typer.Option(help="Clients signing in with correct passwords.")] = 4,
    flood: Annotated[int, typer.Option(help="Clients posting wrong passwords.")] = 16,
    source: Annotated[
        Path | None, typer.Option(help="Serve the app from this source tree (an export of "
                                  "another commit) to compare before and after.")
    ] = None,
) -> None:
    """Logins/s with correct passwords, alone and under a wrong-password flood."""
    from bench.login import LoginBenchConfig, run_login_bench

    quiet()
    result = run_login_bench(
        LoginBenchConfig(seconds=seconds, legit=legit, flood=flood, source=source),
        out=typer.echo,
    )
    emit_result(result, json_path)


@bench_app.command("soak")
def bench_soak(
    people: Annotated[int, typer.Option(help="Simulated people.")] = 5000,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 60.0,
    minutes: Annotated[float, typer.Option(help="Real minutes of simulation (scored).")] = 30.0,
    tail: Annotated[float, typer.Option(help="Simulated seconds the run goes on after them, "
                    "so that a decision the rules may hold back on a violation inside the "
                    "scored minutes can come (an outage up to 25 minutes, then a hold up "
                    "to 10); nothing that starts in the tail is scored.")] = 2400.0,  # DECISION_TAIL_S
    fix_interval: Annotated[float, typer.Option(help="Seconds (simulated) between fixes.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    start: Annotated[str, typer.Option(help="Simulated start (see `simulate --start`).")] = "auto",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = Path("bench-results/soak.json"),
    durable: Annotated[bool, typer.Option(help="PostgreSQL with fsync and synchronous commit "
                       "(production); --no-durable turns them off.")] = True,
    keep: Annotated[bool, typer.Option(help="Keep the work directory (logs, truth, data).")] = False,
    ingest_workers: Annotated[int, typer.Option(help="`probation ingest` processes (a shared "
                              "subscription when more than one).")] = 1,
    curfew: Annotated[float, RateOpt(help="Curfew breaks per person per simulated day.")] = 0.2,
    exclusion: Annotated[float, RateOpt(help="Exclusion-zone entries per person per day.")] = 0.1,
    checkins: Annotated[float, RateOpt(help="Officer check-in requests per person per day.")] = 0.5,
    gps_model: Annotated[str, typer.Option(help="The simulator's GPS error model: realistic "
                         "(fitted on recorded tracks) or simple (error consistent with acc).")] = "realistic",
    rates_soak: Annotated[bool, typer.Option("--soak-test-rates", help="The short soak test's "
                          "raised violation rates (curfew 8, exclusion 4, strap 1, power off 1, "
                          "gaps 2, check-ins 2 per person-day) instead of the rate options.")] = False,
) -> None:
    """Soak: api, ingest and scheduler processes, TimescaleDB, mosquitto, N simulated people."""
    from bench.soak import SoakConfig, run_soak, summary_lines
    from simulator.violations import Rates

    quiet()
    cfg = SoakConfig(people=people, speed=speed, minutes=minutes, tail_s=tail,
                     fix_interval_s=fix_interval,
                     seed=seed, start=start, durable=durable, keep=keep,
                     ingest_workers=ingest_workers, gps_model=gps_model,
                     rates=Rates(curfew=8.0, exclusion=4.0, strap=1.0, power_off=1.0, gap=2.0,
                                 checkin_requests=2.0) if rates_soak else
                     Rates(curfew=curfew, exclusion=exclusion, checkin_requests=checkins))
    result = run_soak(cfg, out=lambda m: typer.echo(m, err=True))
    for line in summary_lines(result):
        typer.echo(line)
    emit_result(result, json_path, echo=False)
    if not (result.get("score", {}).get("bar", {}).get("passed") and result.get("memory_flat")):
        raise typer.Exit(1)


@bench_app.command("gpsfit")
def bench_gpsfit(
    data: Annotated[Path | None, typer.Option(help="The development set (default: the "
                    "shared/realgps folder beside the repository).")] = None,
    json_path: Annotated[Path, typer.Option("--json", help="The report.")] = Path("bench-results/gpsfit.json"),
    params: Annotated[Path | None, typer.Option(help="Also write the simulator's parameters "
                      "here (simulator/gps_fitted.json is what it reads).")] = None,
) -> None:
    """Fit the simulator's realistic GPS error model on recorded tracks (gaps, spikes after
    gaps, multipath excursions, drift while still)."""
    from bench.gpsfit import main

    argv = ["--json", str(json_path)]
    if data is not None:
        argv += ["--data", str(data)]
    if params is not None:
        argv += ["--params", str(params)]
    main(argv)


@bench_app.command("sim-offline")
def bench_sim_offline(
    gps_model: Annotated[list[str] | None, typer.Option(help="GPS models (repeat).")] = None,
    fix_interval: Annotated[list[float] | None, typer.Option(help="Fix intervals, s (repeat).")] = None,
    people: Annotated[int, typer.Option(help="Simulated people.")] = 200,
    hours: Annotated[float, typer.Option(help="Simulated hours from --start.")] = 2.0,
    seed: Annotated[int, typer.Option(help="Random seed (the people, their plan, the noise).")] = 1,
    start: Annotated[str, typer.Option(
        help="Simulated start: HH:MM in Almaty (the latest that ends before now: the date, "
             "hence the plan, moves with the clock) or RFC 3339 for a reproducible run.")]
    = "21:00",
    json_path: Annotated[Path, typer.Option("--json", help="The results.")] = Path("bench-results/sim-offline.json"),
) -> None:
    """The simulator's fixes through the geofence engine in-process: zone false alarms per
    person-day per GPS model and fix interval, in a minute (no servers)."""
    from bench.simoffline import main

    argv = ["--people", str(people), "--hours", str(hours), "--seed", str(seed),
            "--start", start, "--json", str(json_path)]
    argv += ["--gps-model", *(gps_model or ["simple", "realistic"])]
    argv += ["--fix-interval", *[str(f) for f in (fix_interval or [60.0, 30.0])]]
    main(argv, out=typer.echo)


@bench_app.command("investigations")
def bench_investigations(
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")]
    = Path("bench-results/investigations.json"),
    cases: Annotated[int, typer.Option(help="Cases, one bracelet each, a week of fixes.")] = 2000,
    interval_s: Annotated[float, typer.Option(help="Seconds between a person's fixes (240: "
                          "5,040,000 fixes for 2,000 cases).")] = 240.0,
    queries: Annotated[int, typer.Option(help="Timed queries of each kind.")] = 50,
    check: Annotated[int, typer.Option(help="Queries of each kind compared with a brute-force "
                     "scan over every fix.")] = 5,
    seed: Annotated[int, typer.Option(help="Workload seed.")] = 1,
    database_url: Annotated[str | None, typer.Option(help="A throwaway database (default: a "
                            "private PostgreSQL, TimescaleDB when installed).")] = None,
    keep: Annotated[Path | None, typer.Option(help="Keep the private PostgreSQL in this "
                    "directory and reuse the world it holds on the next run (same --cases, "
                    "--interval-s, --seed): no reload.")] = None,
) -> None:
    """Proximity searches (500 m x 1 h, 2 km x 24 h) on a week of fixes, p50/p99, with and
    without a (lat, lon) index, answers checked against a brute-force scan."""
    from bench.investigations import main

    quiet()
    argv = ["--cases", str(cases), "--interval-s", str(interval_s), "--queries", str(queries),
            "--check", str(check), "--seed", str(seed)]
    if database_url:
        argv += ["--database-url", database_url]
    if keep is not None:
        argv += ["--keep", str(keep)]
    if json_path is not None:
        argv += ["--json", str(json_path)]
    main(argv)


@bench_app.command("biometrics")
def bench_biometrics(
    json_path: Annotated[
        Path, typer.Option("--json", help="Write the results here (JSON object).")
    ] = Path("bench-results/biometrics.json"),
    data: Annotated[
        Path | None,
        typer.Option(help="Directory of face photographs: yale/ (Yale Face Database) and fr/ "
                     "(face_recognition's examples); see README 'Biometrics'. Without it only "
                     "the photos in tests/data/faces are used."),
    ] = None,
    checkins: Annotated[int, typer.Option(help="Check-ins timed (3 frames each).")] = 20,
    ingest: Annotated[
        bool, typer.Option(help="Also measure fix ingestion (private PostgreSQL and mosquitto) "
                           "without and with 50 check-ins being verified.")
    ] = False,
    rate: Annotated[float, typer.Option(help="Fixes/s published in the ingest phases.")] = 2000,
    seconds: Annotated[float, typer.Option(help="Length of each ingest phase.")] = 20,
) -> None:
    """Face model error rates (FAR/FRR, ROC), challenge and replay detection, and time per
    check-in and per enrolment, on real photographs; with --ingest, fix ingestion while
    50 check-ins are verified."""
    import json

    from bench.biometrics import report, run

    result = run(data, json_path, n_timing=checkins)
    print(report(result))
    if ingest:
        from bench.biometrics_ingest import run_ingest_phases

        result["ingest"] = run_ingest_phases(rate=rate, seconds=seconds)
        json_path.write_text(json.dumps(result, indent=2))

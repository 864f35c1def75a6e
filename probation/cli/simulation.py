"""The simulator's commands: `simulate`, `score`, `demo` (the code is in `simulator`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from probation.cli.common import HostOpt, PortOpt, quiet

RateOpt = typer.Option


def _rates(curfew: float, exclusion: float, strap: float, power_off: float, gaps: float,
           checkins: float, checkin_missed: float, checkin_failed: float) -> Any:
    from simulator.violations import Rates

    return Rates(curfew=curfew, exclusion=exclusion, strap=strap, power_off=power_off, gap=gaps,
                 checkin_requests=checkins, checkin_missed=checkin_missed,
                 checkin_failed=checkin_failed)


def simulate(
    mqtt: Annotated[str, typer.Option(help="Broker URL, mqtt://user:pass@host:port.")],
    api_url: Annotated[str | None, typer.Option("--api", help="API base URL (for the setup, "
                                                "officer check-in requests and the lag probe).")] = None,
    username: Annotated[str, typer.Option(help="An admin's username.")] = "admin",
    password: Annotated[str, typer.Option(help="Its password.", envvar="PROBATION_SIM_PASSWORD")] = "",
    people: Annotated[int, typer.Option(help="Simulated people (one bracelet and phone each).")] = 100,
    fix_interval: Annotated[float, typer.Option(help="Seconds (simulated) between fixes.")] = 60.0,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 10.0,
    duration: Annotated[float, typer.Option(help="Real seconds to run (scored).")] = 600.0,
    tail: Annotated[float, typer.Option(help="Simulated seconds the run goes on after them, "
                    "so that a decision the rules may hold back on a violation inside the "
                    "scored time can come (an outage up to 25 minutes, then a hold up to "
                    "10); `probation score` scores nothing that starts in the tail.")] = 2400.0,  # DECISION_TAIL_S
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same people and plan.")] = 1,
    truth: Annotated[Path, typer.Option(help="Truth records (JSON lines) for `probation score`.")] = Path("truth.jsonl"),
    setup: Annotated[bool, typer.Option("--setup/--no-setup", help="Register subjects, cases, "
                     "devices and zones through the API first (--no-setup: reuse --setup-file).")] = True,
    setup_file: Annotated[Path | None, typer.Option(help="Where the registered ids are kept "
                          "(default: <truth>.setup.json).")] = None,
    start: Annotated[str, typer.Option(help="Simulated start: auto (now - speed x duration), "
                     "HH:MM (latest such local time before that), or an RFC 3339 time.")] = "auto",
    prefix: Annotated[str, typer.Option(help="Topic prefix.", envvar="PROBATION_MQTT_PREFIX")] = "pm/v1",
    phones: Annotated[bool, typer.Option("--phones/--no-phones", help="A check-in phone per person "
                      "(else the bracelet answers check-ins).")] = True,
    curfew: Annotated[float, RateOpt(help="Curfew breaks per person per simulated day.")] = 0.2,
    exclusion: Annotated[float, RateOpt(help="Exclusion-zone entries per person per day.")] = 0.1,
    strap: Annotated[float, RateOpt(help="Strap openings per person per day.")] = 0.05,
    power_off: Annotated[float, RateOpt(help="Devices switched off per person per day.")] = 0.05,
    gaps: Annotated[float, RateOpt(help="Coverage gaps (late uploads) per person per day.")] = 1.0,
    checkins: Annotated[float, RateOpt(help="Officer check-in requests per person per day.")] = 0.5,
    checkin_missed: Annotated[float, RateOpt(help="Share of check-in requests left unanswered.")] = 0.1,
    checkin_failed: Annotated[float, RateOpt(help="Share answered with a wrong face or a spoof.")] = 0.1,
    checkin_deadline: Annotated[int, typer.Option(help="Deadline of the officer requests (s).")] = 300,
    max_inflight: Annotated[int, typer.Option(help="Unacknowledged QoS 1 messages at most.")] = 1000,
    checkin_frames: Annotated[bool, typer.Option(
        "--checkin-frames/--checkin-embeddings",
        help="Check-ins as camera frames of real photos, verified by the backend (the person "
             "enrolled from photos), or as app embeddings from phones marked trusted.")] = True,
    gps_model: Annotated[str, typer.Option(help="GPS error model: realistic (outages, spikes "
                         "after gaps, multipath excursions, drift while still, fitted on "
                         "recorded tracks by `probation bench gpsfit`) or simple (error "
                         "consistent with acc).")] = "realistic",
) -> None:
    """Publish the traffic of N simulated people (bracelets and check-in phones) over MQTT."""
    from simulator.run import Progress, SimConfig, run_simulation

    quiet()
    cfg = SimConfig(
        mqtt=mqtt, api=api_url, username=username, password=password, people=people,
        fix_interval_s=fix_interval, speed=speed, duration_s=duration, tail_s=tail, seed=seed,
        truth=truth, setup=setup, setup_file=setup_file, start=start, prefix=prefix, phones=phones,
        rates=_rates(curfew, exclusion, strap, power_off, gaps, checkins, checkin_missed,
                     checkin_failed),
        checkin_deadline_s=checkin_deadline, max_inflight=max_inflight,
        checkin_frames=checkin_frames, gps_model=gps_model,
    )
    last = [0.0]

    def show(p: Progress) -> None:
        if p.elapsed_s - last[0] >= 10 or p.elapsed_s >= p.duration_s:
            last[0] = p.elapsed_s
            lag = "-" if p.lag_s is None else f"{p.lag_s:.1f} s"
            typer.echo(f"[{p.elapsed_s:5.0f}/{p.duration_s:.0f} s] {p.fixes_per_s:6.0f} fixes/s, "
                       f"{p.messages_per_s:5.0f} msg/s, lag {lag}, open alerts {p.open_alerts}, "
                       f"truth {p.truths}", err=True)

    res = run_simulation(cfg, on_progress=show, on_phase=lambda m: typer.echo(m, err=True))
    typer.echo(f"done: {res.stats.get('fixes', 0)} fixes in {res.publisher['messages']} messages; "
               f"truth {res.truths} ({res.noise_due} GPS-noise episodes) -> {res.truth}", err=True)


def score(
    api_url: Annotated[str, typer.Option("--api", help="API base URL.")],
    truth: Annotated[Path, typer.Option(help="The simulator's truth file.")],
    username: Annotated[str, typer.Option(help="A user who sees the run's cases.")] = "admin",
    password: Annotated[str, typer.Option(help="Its password.", envvar="PROBATION_SIM_PASSWORD")] = "",
    json_path: Annotated[Path | None, typer.Option("--json", help="Also write the score here.")] = None,
    slack: Annotated[float, typer.Option(help="Widen every matching window by this (s).")] = 0.0,
) -> None:
    """Recall, precision and delay per alert type, false alarms per person-day, vs the truth."""
    from bench.harness import write_json
    from simulator.score import fetch_alerts, format_table, load_truth
    from simulator.score import score as score_run
    from simulator.setup import ApiClient

    quiet()
    run = load_truth(truth)
    client = ApiClient(api_url, username, password)
    try:
        result = score_run(run, fetch_alerts(client, run), slack_s=slack)
    finally:
        client.close()
    for line in format_table(result):
        typer.echo(line)
    if json_path is not None:
        write_json(json_path, result)


def demo(
    people: Annotated[int, typer.Option(help="Simulated people.")] = 200,
    speed: Annotated[float, typer.Option(help="Simulated time runs this many times faster.")] = 10.0,
    duration: Annotated[float, typer.Option(help="Real seconds of simulation.")] = 300.0,
    fix_interval: Annotated[float, typer.Option(help="Seconds (simulated) between fixes.")] = 60.0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 1,
    host: HostOpt = "127.0.0.1",
    port: PortOpt = 8000,
    keep_serving: Annotated[bool, typer.Option("--keep-serving/--exit", help="Keep the service "
                            "running after the simulation (until Ctrl-C).")] = True,
    score_after: Annotated[float, typer.Option(help="Seconds to wait after the simulation "
                           "before scoring.")] = 45.0,
) -> None:
    """The service (embedded servers, own data dir) plus the simulator, with live figures."""
    from probation.cli.serve import start_demo_service
    from simulator.demo import DemoOptions, run_demo

    quiet()
    code = run_demo(
        DemoOptions(people=people, speed=speed, duration_s=duration, fix_interval_s=fix_interval,
                    seed=seed, host=host, port=port, keep_serving=keep_serving,
                    score_after_s=score_after),
        start_service=start_demo_service,
    )
    raise typer.Exit(code)

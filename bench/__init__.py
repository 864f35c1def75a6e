"""The benchmarks behind `probation bench …`: each prints its figures and returns (and the
CLI writes) a JSON object; every figure is compared with a reference measured in the
same run where there is one.

- `harness`: what the benches share: private PostgreSQL/mosquitto, child processes
  driven over a pipe, waiting and percentiles, JSON output;
- `ingest`: ingestion throughput and latency through a real broker (`bench ingest`);
- `ingest_geofence`: the whole ingest worker on the simulator's world
  (`bench ingest --geofence`);
- `geofence`: the numpy engine against shapely (`bench geofence`);
- `scheduler`: the silence and curfew passes (`bench scheduler`);
- `api`: caseload and acknowledgement latency under load (`bench api`);
- `soak`: api, ingest, scheduler processes and the simulator (`bench soak`);
- `protocol`: the decoder alone (`python -m bench.protocol`).
"""

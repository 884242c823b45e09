"""Admin: platform statistics, error groups and Prometheus metrics (issue 8).

- `stats`: `GET /v1/admin/stats`, a registry of sections (name -> provider); a failing section reports its error.
- `errors`: error groups (fingerprint = type + normalized message + innermost frame) in Redis, with spikes.
- `metrics`: RED metrics per route, job and rate-limit counters in Redis, rendered for Prometheus.
- `hook`: the request hook that feeds both from every API function, in one pipelined round trip.

Importing this package (every API function does, for the hook) costs nothing: redis and boto3 load on use.
"""

"""Operations: what a health system's IT team needs to run followup.

`metrics` (Prometheus instruments, the database figures read at scrape time, the
instrumented transport), `views` (`GET /metrics` on the web app), `exporter` (the same
for `followup worker`, on a port of its own), `runs` (what each scheduler job run leaves
behind: one log line and its metrics), `logs` (the logging configuration) and `checks`
(`followup check`, also run by `serve` and `worker` at start).
"""

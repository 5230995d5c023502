"""The web layer (DESIGN.md, "web"): the newsroom verification page, the public log
explorer and the JSON API, over HTTP.

It is a client of the gRPC service (`clients.api.ProvenanceClient`) and renders the same
report object as ``prov verify --json`` (`clients.report.report_to_json`), after checking
the service's answer as ``prov verify`` does (`clients.cited`, `clients.derived`); it keeps
no state of its own and stores no uploaded file (a spool of one, an unlinked temporary
file, lives only until its answer is checked). Modules, one job each:

- `app`: builds the Starlette application from a `WebConfig`;
- `upload`: relays a multipart upload to the service as it arrives, and checks its answer;
- `api`: the JSON endpoints under ``/api/v1/`` and ``/openapi.json``;
- `softbinding`: the C2PA Soft Binding Resolution API over the PDQ index;
- `logviews`: log entries, checkpoints, proofs and devices as JSON-able dicts;
- `pages`: the HTML pages (verification, log explorer);
- `present`: what the templates show (verdict meanings, score plots);
- `errors`, `security`, `ratelimit`: error mapping, response headers, upload rate limit;
- `serve`: binding a socket and running uvicorn (``prov web``, ``prov serve --http``).
"""

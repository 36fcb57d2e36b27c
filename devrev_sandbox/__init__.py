"""A local DevRev emulator: the stand-in for production in tests, benches and rehearsals.

A real HTTP server on 127.0.0.1 that speaks the part of the DevRev REST API the tool
uses, with the spec's shapes and DevRev's strictness (and, where DevRev's behaviour is
unknown, the strict side of the choices in `devrev_api.assumptions`). It also injects the
faults production has: latency, 5xx, dropped connections, 429 bursts, slow downloads.
Attachments are served by a second server on another port, without auth, from
presigned, expiring URLs; it also takes uploads (artifacts.prepare's presigned
multipart POST). `merge_contacts.py --sandbox` starts it in-process; alone:

    python -m devrev_sandbox --port 8080 --seed devrev_sandbox/demo/demo_seed.json

Modules: server (HTTP, auth, request log, file host), state (DevRev's objects),
endpoints (routes and handlers), validation (request checks, paging), faults (fault
injection, rate limit), modes (switches where DevRev's behaviour is unknown), errors,
dataset (seed and CSV builder, and the demo under demo/).
"""

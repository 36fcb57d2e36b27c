"""`python -m devrev_sandbox`: run the emulator until Ctrl-C."""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import fields

from .faults import Faults
from .modes import BehaviourModes
from .server import DEFAULT_RATE_LIMIT, DEFAULT_TOKEN, DevRevSandbox


def _parser() -> argparse.ArgumentParser:
    defaults = ", ".join(f"{f.name}={f.default}" for f in fields(BehaviourModes))
    parser = argparse.ArgumentParser(
        prog="python -m devrev_sandbox", description="Run the local DevRev emulator until Ctrl-C.",
        epilog=f"modes (defaults): {defaults}. What each means: devrev_sandbox/modes.py.")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--files-port", type=int, default=0, help="port of the attachment host (default: any)")
    parser.add_argument("--seed", help="seed JSON file (see devrev_sandbox/dataset.py)")
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--rate-limit", metavar="CALLS/SECONDS",
                        help="server-side limit, e.g. 600/60 (default: 100000/300, DevRev's 5-minute window)")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every call")
    parser.add_argument("--mode", action="append", default=[], metavar="NAME=VALUE",
                        help="play an unknown DevRev behaviour another way (repeatable; see below)")
    return parser


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    rate_limit = DEFAULT_RATE_LIMIT
    if args.rate_limit:
        try:
            calls, seconds = args.rate_limit.split("/")
            rate_limit = (int(calls), float(seconds))
        except ValueError:
            parser.error("--rate-limit must look like 600/60")
    try:
        modes = BehaviourModes().with_pairs(args.mode)
    except ValueError as exc:
        parser.error(str(exc))
    if args.seed and not os.path.isfile(args.seed):
        parser.error(f"seed file not found: {args.seed}")
    sandbox = DevRevSandbox(args.seed, token=args.token, rate_limit=rate_limit, port=args.port, modes=modes,
                            files_port=args.files_port, faults=Faults(latency=args.latency)).start()
    print(f"DevRev sandbox on {sandbox.base_url} (attachments on {sandbox.files_base_url}); Ctrl-C stops it.")
    print(f"  export DEVREV_BASE_URL={sandbox.base_url} DEVREV_API_TOKEN={args.token}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

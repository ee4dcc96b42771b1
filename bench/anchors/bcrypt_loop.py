"""Raw bcrypt on one thread: the most password checks a core can do (the login scenario's ceiling).

``python -m bench.anchors.bcrypt_loop --cost 12 --duration 5`` prints ``{"checks": N, "wall_s": S}``.
The check is the user service's: bcrypt over base64(sha256(password)).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import time

import bcrypt
import orjson

_MAX_CHECKS = 100_000


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.anchors.bcrypt_loop")
    parser.add_argument("--cost", type=int, default=12)
    parser.add_argument("--duration", type=float, required=True)
    args = parser.parse_args()
    secret = base64.b64encode(hashlib.sha256(b"correct horse battery staple").digest())
    hashed = bcrypt.hashpw(secret, bcrypt.gensalt(rounds=args.cost))
    start = time.perf_counter()
    checks = 0
    while checks < _MAX_CHECKS:
        if not bcrypt.checkpw(secret, hashed):
            raise SystemExit("bcrypt check failed")
        checks += 1
        if time.perf_counter() - start >= args.duration:
            break
    print(orjson.dumps({"checks": checks, "wall_s": time.perf_counter() - start}).decode(), flush=True)


if __name__ == "__main__":
    main()

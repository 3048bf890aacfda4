"""`ray start` for a worker node of the test cluster that stays on 127.0.0.1.

    python tests/harness/ray_node.py start --address=127.0.0.1:PORT \
        --node-ip-address=127.0.0.1 --block

The same command as Ray's own `ray start` (its `main`), with one difference: a joining node keeps
the loopback address it is given. Ray 2.60 replaces "127.0.0.1" by the machine's network address
when a node joins a cluster, unless RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, and with that variable
`ray start --address` refuses to join at all; and a node whose address is not a loopback one
listens on every interface. Here every node listens on 127.0.0.1 only.
"""

from __future__ import annotations

import sys

from ray._private import services

_resolve = services.resolve_ip_for_localhost


def _keep_loopback(host: str) -> str:
    return host if host == "127.0.0.1" else _resolve(host)


if __name__ == "__main__":
    services.resolve_ip_for_localhost = _keep_loopback
    from ray.scripts.scripts import main

    sys.argv = ["ray", *sys.argv[1:]]
    sys.exit(main())

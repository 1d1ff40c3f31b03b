"""The runner inits every function before it serves: its containers share one process."""

from __future__ import annotations

from giftmarket import lazy
from giftmarket_local.runner import Gateway
from giftmarket_local.template import read_application


def test_init_loads_every_function_and_what_first_requests_import() -> None:
    gateway = Gateway(read_application(), containers=1)
    assert all(host.module is None for host in gateway.hosts.values())

    gateway.init()

    # Nothing is left for two first requests to import at once in two threads (a run of
    # `make test` once got a partially initialised Powertools module that way: a 500).
    assert {name for name, host in gateway.hosts.items() if host.module is None} == set()
    assert [m for m in lazy._declared if not m.loaded] == []
    gateway.shutdown()

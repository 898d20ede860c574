"""Shared test configuration. Fixtures live in ``tests/support/`` modules, registered here."""

pytest_plugins = [
    "tests.support.services",
    "tests.support.redis_cluster",
    "tests.support.fault_proxy",
    "tests.support.redis_sentinel",
    "tests.support.stores",
    "tests.support.manager",
    "tests.support.server",
    "tests.support.features",
    "tests.support.disks",
    "tests.support.tls",
    "conveyor.testing",
    "tests.support.browser",
]

"""The inspector commands of ``conveyor``: ``stats``, ``queue``, ``job``, ``push``, ``worker
ls|quiet|stop``, ``cron`` and ``dash``, over one FWP connection (docs/cli.md).

Each command parses its arguments and makes standard Faktory calls (INFO, QUEUE, PUSH) where
FWP has them and ``ADMIN`` operations (``conveyor.server.admin``) where it has not, so they
work against any conveyor server, local or remote. Each feature (cron, batches, results)
adds a module here with its verbs and registers it in ``conveyor.cli.SUBCOMMANDS``.
"""

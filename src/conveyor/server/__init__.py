"""The asyncio FWP server: connections, HI/HELLO, TLS, and the command table over the manager."""

from __future__ import annotations

from conveyor.server.app import FaktoryServer, make_ssl_context, run, run_forever
from conveyor.server.commands import COMMANDS

__all__ = ["COMMANDS", "FaktoryServer", "make_ssl_context", "run", "run_forever"]

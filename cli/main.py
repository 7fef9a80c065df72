"""The `aidns` command: one typer app, each command thin over aidns.resolver."""

from __future__ import annotations

from aidns.cli.check import check
from aidns.cli.errors import reports_errors
from aidns.cli.hosts import hosts_app
from aidns.cli.lists import lists_app
from aidns.cli.log import log, top, who
from aidns.cli.optout import optout
from aidns.cli.root import new_app
from aidns.cli.rules import allow, block, pause, resume, rules, status, unallow, unblock
from aidns.cli.serve import serve
from aidns.cli.system import doctor, install, setup_dns_command, uninstall

app = new_app()

COMMANDS = (serve, log, who, top, block, unblock, allow, unallow, rules, pause, resume, status)
for command in COMMANDS:
    app.command()(reports_errors(command))
app.add_typer(lists_app)
app.command()(reports_errors(check))
app.command()(reports_errors(optout))
app.add_typer(hosts_app)
app.command()(reports_errors(install))
app.command()(reports_errors(uninstall))
app.command("setup-dns")(reports_errors(setup_dns_command))
app.command()(reports_errors(doctor))

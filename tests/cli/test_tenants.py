"""`storyloom tenants`: a tenant's key printed once, on the last line, and working."""

from __future__ import annotations

from typer.testing import CliRunner

from storyloom import services
from storyloom.cli import app


def test_a_tenant_key_is_printed_once_on_the_last_line() -> None:
    runner = CliRunner()
    added = runner.invoke(app, ["tenants", "add", "acme", "--name", "Acme Books"])
    assert added.exit_code == 0, added.output
    key = added.stdout.strip().splitlines()[-1]
    caller = services.store().caller(key)
    assert caller is not None
    assert caller.tenant_id == "acme"

    again = runner.invoke(app, ["tenants", "add", "acme"])
    assert again.exit_code == 2
    assert "already exists" in again.output

    admin = runner.invoke(app, ["tenants", "key", "--admin"])
    admin_key = admin.stdout.strip().splitlines()[-1]
    found = services.store().caller(admin_key)
    assert found is not None
    assert found.is_admin

    revoked = runner.invoke(app, ["tenants", "key", "--revoke", key.split("_")[1]])
    assert revoked.exit_code == 0
    assert services.store().caller(key) is None
    assert runner.invoke(app, ["tenants", "add", "Not An Id"]).exit_code == 2

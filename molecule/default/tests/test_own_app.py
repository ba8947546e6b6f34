"""The README's own app ("An app of your own in a few lines"): the scenario's prepare step wrote
it out of the README's code blocks, outside the repository; the README's inventory lines
(tests/unit/test_readme_app.py holds the scenario to them) deployed it on gworker1, beside the
downloader and the reports app. The README's command, run there as it says (as root and as
the operator account its group lists), gets the task's result, and the app's status lists its
node alone (its own vhost).
"""

from __future__ import annotations

from pathlib import Path

import readme_app
from celerylab import PROJECT, README_APP_WORKERS, RUNNER, config_env, host, short, status_nodes

README = (PROJECT / "README.md").read_text()
ENV = config_env("greeter")


def test_the_app_comes_from_outside_the_repository() -> None:
    (worker,) = README_APP_WORKERS
    apps = {app["id"]: app for app in RUNNER.get_variables(worker)["cluster_apps"]}
    source = Path(apps["greeter"]["source"])
    assert source.is_absolute() and not source.is_relative_to(PROJECT), source
    assert (source / "greeterApp.py").read_text() == readme_app.app_files(README)["greeterApp.py"]


def test_the_readme_command_gets_the_greeting_from_the_app() -> None:
    for worker in README_APP_WORKERS:
        out = host(worker).check_output(readme_app.command(README))
        assert out.strip() == "Hello, operator!", out
        status = host(worker).check_output(f"env {ENV} /opt/greeter/venv/bin/celery -A greeterApp status")
        assert status_nodes(status) == {f"greeter1@{short(worker)}"}, status


def test_the_readme_command_works_for_the_operator_account_and_no_other() -> None:
    """`deploy`, in the README group's celery_app_operators, runs the README's command; `nobody`
    cannot read the app's configuration and gets no greeting."""
    command = readme_app.command(README)
    for worker in README_APP_WORKERS:
        allowed = host(worker).run("cd / && sudo -u deploy sh -c %s", command)
        said = allowed.stdout + allowed.stderr
        assert allowed.rc == 0 and allowed.stdout.strip() == "Hello, operator!", said
        refused = host(worker).run("cd / && sudo -u nobody sh -c %s", command)
        said = refused.stdout + refused.stderr
        assert refused.rc != 0 and "Hello" not in refused.stdout, said
        # Refused for the configuration (unreadable to nobody: /etc/greeter is the group's).
        assert "celeryconfig" in said, said

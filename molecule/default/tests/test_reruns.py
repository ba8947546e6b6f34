"""Re-runs: a firewall, a venv and units of an older release put right; a check run on the
converged cluster has nothing to change."""

from __future__ import annotations

import json
import time

from celerylab import (
    BROKERS,
    CA_FILE,
    CLUSTER,
    FLOWER_PORT,
    FLOWER_URL,
    FLOWERS,
    HTTP,
    INVENTORY,
    RECAP,
    RUNNER,
    SECRETS,
    WEB,
    WORKERS,
    amqp_login,
    cluster_address_of,
    connect,
    flower_unit,
    host,
    nodes_of,
    probe,
    run_playbook,
    secrets,
    worker_unit,
)


def zone_of(name: str) -> str:
    zone: str = RUNNER.get_variables(name).get("firewall_zone", "public")
    return zone


def zone_state(name: str) -> list[str]:
    out = host(name).check_output("sh -c %s zone %s", probe("zone_state.sh"), zone_of(name))
    return sorted(" ".join(line.split()) for line in out.splitlines())


VENV_PIP = "/opt/downloader/venv/bin/pip"


def pip_show(on: str, distribution: str) -> str:
    """The Version line of `pip show` in the app's venv, or pip's complaint."""
    result = host(on).run(f"{VENV_PIP} show {distribution}")
    versions = [line for line in result.stdout.splitlines() if line.startswith("Version:")]
    return versions[0] if result.rc == 0 and versions else f"rc {result.rc}: {result.stderr.strip()}"


def ports_of(state: list[str]) -> dict[str, list[str]]:
    """The ports line of each layer (runtime, permanent) of a zone_state."""
    return {line.split()[0]: line.split()[2:] for line in state if line.split()[1:2] == ["ports:"]}


# On the Flower host of both scenarios: firewall_kept lists it (molecule.yml).
KEPT_PORT = "8084/tcp"


def test_firewall_and_venv_changed_by_hand_are_put_right_by_the_next_run() -> None:
    """On the Flower host, by hand: ssh closed for now, http opened (saved and in force), the
    zone's saved target set to ACCEPT, a rule that opens Flower's port to the web host
    (outside its sources); a port opened to all (--add-port), a forward-port to Flower's port,
    a source bound to the zone, a rule for a port no role uses, and the port firewall_kept
    lists, each in force and saved; and one of Flower's dependencies (humanize) uninstalled
    from the app's venv. On the broker, by hand: Flower's user given another password, the
    client's user a tag and every right on the vhost `/`. `site.yml --tags
    firewall,flower_firewall,celery_app_install,rabbitmq_users` limited to those two hosts
    puts every setting of the zone back as it was but the kept port (Flower's port and the
    port opened by hand drop the web host's connection again), installs the missing
    distribution at its locked version from the wheelhouse (the venv's stamp no longer
    matches the venv), and Flower answers again; Flower's user logs in with its password
    again, and the client's user has no tag and rights on the app vhost alone. Also units as
    a release before app ids left them: on the Flower host `flower` runs in place of
    flower-downloader, on a worker host `celery-worker@NODE` (its template unit) in place of
    celery-worker-downloader@NODE; the same run, also tagged flower_configure, flower_run,
    celery_worker_configure and celery_worker_run and limited to that worker host too, stops,
    disables and removes them and runs the app's units."""
    flower, broker, worker = FLOWERS[0], BROKERS[0], WORKERS[-1]
    node = nodes_of(worker)[0]
    new_worker, new_flower = worker_unit(worker, node), flower_unit(flower)
    old_worker, units = f"celery-worker@{node}", "/etc/systemd/system"
    old_units = {
        worker: [
            f"systemctl disable --now {new_worker}",
            f"cp {units}/{new_worker.replace(node, '')}.service {units}/celery-worker@.service",
            f"systemctl daemon-reload && systemctl enable --now {old_worker}",
        ],
        flower: [
            f"systemctl disable --now {new_flower}",
            f"cp {units}/{new_flower}.service {units}/flower.service",
            "systemctl daemon-reload && systemctl enable --now flower",
        ],
    }
    new_units = {
        worker: f"systemctl disable --now {old_worker}; rm -f {units}/celery-worker@.service; "
        f"systemctl daemon-reload; systemctl enable --now {new_worker}",
        flower: f"systemctl disable --now flower; rm -f {units}/flower.service; "
        f"systemctl daemon-reload; systemctl enable --now {new_flower}",
    }
    flower_password = (SECRETS / "rabbitmq_flower_password").read_text().split()[0]
    users_by_hand = [
        "rabbitmqctl -q change_password downloader-flower not-the-password",
        "rabbitmqctl -q set_permissions -p / downloader-client '.*' '.*' '.*'",
        "rabbitmqctl -q set_user_tags downloader-client management",
    ]
    rule = (
        f'rule family="ipv4" source address="{cluster_address_of(WEB)}/32" '
        f'port port="{FLOWER_PORT}" protocol="tcp" accept'
    )
    foreign_rule = (
        f'rule family="ipv4" source address="{cluster_address_of(WEB)}/32" '
        'port port="8083" protocol="tcp" accept'
    )
    before = zone_state(flower)
    assert {"runtime services: ssh", "permanent target: DROP"} <= set(before), before
    zone = f"--zone={zone_of(flower)}"
    by_hand = [
        "--add-port=8081/tcp",
        f"--add-forward-port=port=8082:proto=tcp:toport={FLOWER_PORT}",
        "--add-source=192.0.2.0/24",
        f"--add-rich-rule='{foreign_rule}'",
        f"--add-port={KEPT_PORT}",
    ]
    changes = [
        f"firewall-cmd {zone} --remove-service=ssh",
        f"firewall-cmd {zone} --add-service=http",
        f"firewall-cmd --permanent {zone} --add-service=http",
        f"firewall-cmd --permanent {zone} --set-target=ACCEPT",
        f"firewall-cmd {zone} --add-rich-rule='{rule}'",
        f"firewall-cmd --permanent {zone} --add-rich-rule='{rule}'",
        *(f"firewall-cmd {layer}{zone} {change}" for layer in ("", "--permanent ") for change in by_hand),
    ]
    locked = pip_show(flower, "humanize")
    assert locked.startswith("Version: "), locked
    put_right = units_put_right = False
    try:
        for name, commands in old_units.items():
            host(name).check_output(" && ".join(commands))
        assert host(worker).service(old_worker).is_running and host(flower).service("flower").is_running
        host(flower).check_output(" && ".join(changes))
        host(flower).check_output(f"{VENV_PIP} uninstall --yes humanize")
        assert pip_show(flower, "humanize").startswith("rc "), "humanize is still installed"
        assert connect(WEB, flower, FLOWER_PORT) == "open", "the rule added by hand had no effect"
        assert connect(WEB, flower, 8081).startswith("ConnectionRefused"), "--add-port had no effect"
        host(broker).check_output(" && ".join(users_by_hand))
        assert amqp_login(flower, "downloader-flower", flower_password).startswith("refused")
        tags = "firewall,flower_firewall,celery_app_install,rabbitmq_users"
        tags += ",flower_configure,flower_run,celery_worker_configure,celery_worker_run"
        run_playbook("site.yml", "-i", INVENTORY, "--tags", tags, "--limit", f"{flower},{broker},{worker}")
        for name, old, new, leftover in (
            (worker, old_worker, new_worker, "celery-worker@.service"),
            (flower, "flower", new_flower, "flower.service"),
        ):
            # Gone: systemd no longer knows the unit (`is-enabled` says not-found).
            state = host(name).run(f"systemctl is-active {old}; systemctl is-enabled {old}").stdout.split()
            assert state == ["inactive", "not-found"], (old, state)
            assert not host(name).file(f"{units}/{leftover}").exists, leftover
            assert host(name).service(new).is_running and host(name).service(new).is_enabled, new
        units_put_right = True
        after = zone_state(flower)
        assert {layer: KEPT_PORT in ports for layer, ports in ports_of(after).items()} == {
            "runtime": True,
            "permanent": True,
        }, after
        host(flower).check_output(
            " && ".join(
                f"firewall-cmd {layer}{zone} --remove-port={KEPT_PORT}" for layer in ("", "--permanent ")
            )
        )
        assert zone_state(flower) == before
        put_right = True
        assert connect(WEB, flower, FLOWER_PORT).startswith("TimeoutError")
        assert connect(WEB, flower, 8081).startswith("TimeoutError")
        assert pip_show(flower, "humanize") == locked
        assert amqp_login(flower, "downloader-flower", flower_password) == "open"
        rights = host(broker).check_output(
            "rabbitmqctl -q list_user_permissions downloader-client --formatter json"
        )
        assert [r["vhost"] for r in json.loads(rights)] == ["downloader"], rights
        users = json.loads(host(broker).check_output("rabbitmqctl -q list_users --formatter json"))
        assert {u["user"]: u["tags"] for u in users}["downloader-client"] == [], users
        # The install restarted Flower (a notified handler): it answers within a bounded wait.
        answered = ""
        for _ in range(30):
            url = f"{FLOWER_URL}/healthcheck"
            result = host(WORKERS[0]).run("python3 -c %s GET %s '' '' %s", HTTP, url, CA_FILE)
            answered = result.stdout.strip() if result.rc == 0 else result.stderr.strip()[-200:]
            if answered.split() == ["200", "OK"]:
                break
            time.sleep(1)
        assert answered.split() == ["200", "OK"], answered
    finally:
        if not units_put_right:
            for name, command in new_units.items():
                host(name).run(command)
        if not put_right:  # undo the changes by hand, for the tests after this one
            undo = [
                f"firewall-cmd --permanent {zone} --remove-service=http",
                f"firewall-cmd --permanent {zone} --add-service=ssh",
                f"firewall-cmd --permanent {zone} --set-target=DROP",
                f"firewall-cmd --permanent {zone} --remove-rich-rule='{rule}'",
                *(f"firewall-cmd --permanent {zone} {c.replace('--add-', '--remove-', 1)}" for c in by_hand),
                "firewall-cmd --reload",
            ]
            host(flower).run("; ".join(undo))
            host(broker).run(
                "rabbitmqctl -q change_password downloader-flower %s; "
                "rabbitmqctl -q clear_permissions -p / downloader-client; "
                "rabbitmqctl -q set_user_tags downloader-client",
                flower_password,
            )


def test_check_mode_on_the_converged_cluster_reports_nothing_to_change() -> None:
    """A verbose (-v) check run with --diff: nothing to change, and no secret in its output."""
    out = run_playbook("site.yml", "-i", INVENTORY, "--check", "--diff", "-v")
    recap = RECAP.findall(out)
    assert {name for name, *_ in recap} >= set(CLUSTER)
    for name, changed, unreachable, failed in recap:
        assert (changed, unreachable, failed) == ("0", "0", "0"), f"{name}:\n{out[-5000:]}"
    for secret in secrets():
        assert secret not in out, "a secret appears in the output of the check run"

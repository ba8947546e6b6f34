"""Re-runs: a firewall changed by hand is put right; a check run on the converged cluster has
nothing to change."""

from __future__ import annotations

from celerylab import (
    CLUSTER,
    FLOWER_PORT,
    FLOWERS,
    INVENTORY,
    RECAP,
    RUNNER,
    WEB,
    cluster_address_of,
    connect,
    host,
    probe,
    run_playbook,
    secrets,
)


def zone_of(name: str) -> str:
    zone: str = RUNNER.get_variables(name).get("firewall_zone", "public")
    return zone


def zone_state(name: str) -> list[str]:
    out = host(name).check_output("sh -c %s zone %s", probe("zone_state.sh"), zone_of(name))
    return sorted(" ".join(line.split()) for line in out.splitlines())


def test_firewall_changed_by_hand_is_put_right_by_the_next_run() -> None:
    """On the Flower host, by hand: ssh closed for now, http opened (saved and in force), the
    zone's saved target set to ACCEPT, and a rule that opens Flower's port to the web host
    (outside its sources). `site.yml --tags firewall,flower_firewall` limited to that host puts
    every setting of the zone back as it was, and Flower's port drops the web host's
    connection again."""
    flower = FLOWERS[0]
    rule = (
        f'rule family="ipv4" source address="{cluster_address_of(WEB)}/32" '
        f'port port="{FLOWER_PORT}" protocol="tcp" accept'
    )
    before = zone_state(flower)
    assert {"runtime services: ssh", "permanent target: DROP"} <= set(before), before
    zone = f"--zone={zone_of(flower)}"
    changes = [
        f"firewall-cmd {zone} --remove-service=ssh",
        f"firewall-cmd {zone} --add-service=http",
        f"firewall-cmd --permanent {zone} --add-service=http",
        f"firewall-cmd --permanent {zone} --set-target=ACCEPT",
        f"firewall-cmd {zone} --add-rich-rule='{rule}'",
        f"firewall-cmd --permanent {zone} --add-rich-rule='{rule}'",
    ]
    put_right = False
    try:
        host(flower).check_output(" && ".join(changes))
        assert connect(WEB, flower, FLOWER_PORT) == "open", "the rule added by hand had no effect"
        run_playbook("site.yml", "-i", INVENTORY, "--tags", "firewall,flower_firewall", "--limit", flower)
        assert zone_state(flower) == before
        put_right = True
        assert connect(WEB, flower, FLOWER_PORT).startswith("TimeoutError")
    finally:
        if not put_right:  # undo the changes by hand, for the tests after this one
            undo = [
                f"firewall-cmd --permanent {zone} --remove-service=http",
                f"firewall-cmd --permanent {zone} --add-service=ssh",
                f"firewall-cmd --permanent {zone} --set-target=DROP",
                f"firewall-cmd --permanent {zone} --remove-rich-rule='{rule}'",
                "firewall-cmd --reload",
            ]
            host(flower).run("; ".join(undo))


def test_check_mode_on_the_converged_cluster_reports_nothing_to_change() -> None:
    """A verbose (-v) check run with --diff: nothing to change, and no secret in its output."""
    out = run_playbook("site.yml", "-i", INVENTORY, "--check", "--diff", "-v")
    recap = RECAP.findall(out)
    assert {name for name, *_ in recap} >= set(CLUSTER)
    for name, changed, unreachable, failed in recap:
        assert (changed, unreachable, failed) == ("0", "0", "0"), f"{name}:\n{out[-5000:]}"
    for secret in secrets():
        assert secret not in out, "a secret appears in the output of the check run"

"""The placement-and-repair simulator (cas.dht.sim_repair): what churn does
to copies, traffic and loss, on small networks."""

from __future__ import annotations

from cas.dht.sim_repair import format_header, format_row, main, simulate


def test_without_churn_nothing_moves_and_nothing_is_lost() -> None:
    stats = simulate(nodes=30, blocks=200, replicas=3, churn_per_day=0.0, days=2)
    assert (stats.lost, stats.stores, stats.replaced) == (0, 0, 0)
    assert stats.durability == 1.0


def test_each_replaced_node_costs_about_its_share_of_copies_twice() -> None:
    stats = simulate(nodes=50, blocks=500, replicas=3, churn_per_day=0.2, days=5, seed=3)
    assert stats.replaced > 0 and stats.lost == 0
    share = 500 * 3 / 50  # blocks each node holds
    # a death costs one store per block it held, a join about as many (handover)
    assert 0.5 * share * stats.replaced < stats.stores < 3 * share * stats.replaced


def test_a_single_copy_under_heavy_churn_is_lost_and_more_replicas_keep_it() -> None:
    one = simulate(nodes=40, blocks=300, replicas=1, churn_per_day=0.5, days=3, seed=2)
    five = simulate(nodes=40, blocks=300, replicas=5, churn_per_day=0.5, days=3, seed=2)
    assert one.lost > 0
    assert five.lost == 0


def test_the_command_prints_one_row_per_churn_and_r(capsys) -> None:  # noqa: ANN001
    assert main(["--nodes", "20", "--blocks", "50", "--days", "1", "--replicas", "2", "3",
                 "--churn", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == format_header()
    assert len(lines) == 4
    assert format_row(simulate(nodes=20, blocks=50, replicas=2, churn_per_day=0.1, days=1)) == lines[2]

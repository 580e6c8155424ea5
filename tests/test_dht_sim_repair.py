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


def test_the_command_prints_one_row_per_churn_and_r(capsys) -> None:
    assert main(["--nodes", "20", "--blocks", "50", "--days", "1", "--replicas", "2", "3",
                 "--churn", "0.1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == format_header()
    assert len(lines) == 4
    assert format_row(simulate(nodes=20, blocks=50, replicas=2, churn_per_day=0.1, days=1)) == lines[2]


def test_half_the_nodes_dying_at_once_costs_about_half_to_the_r_of_the_blocks() -> None:
    from cas.dht.sim_repair import mass_failure

    one = mass_failure(nodes=40, replicas=1, fraction=0.5, files=10, blocks_per_file=16, trials=10)
    assert 0.35 < one.lost_blocks / one.blocks < 0.65  # each block's one holder dies with p = 1/2
    three = mass_failure(nodes=40, replicas=3, fraction=0.5, files=10, blocks_per_file=16, trials=10)
    assert three.lost_blocks < one.lost_blocks and three.unreadable_files > 0
    every = mass_failure(nodes=40, replicas=21, fraction=0.5, files=10, blocks_per_file=16, trials=10)
    assert every.lost_blocks == 0 and every.readable == 1.0  # 21 holders cannot all be in a dead 20

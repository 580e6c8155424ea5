"""The simulator: the real routing and lookup code over a model network."""

from __future__ import annotations

import bisect
import csv

import pytest

from cas.dht.ids import ID_BITS
from cas.dht.sim import Network, SimConfig, build_network, main, percentile
from tests.conftest import skip_unless_ci


@pytest.fixture(scope="module")
def joined() -> Network:
    net, _ = build_network(500, build="join", seed=3)
    return net


def test_every_joined_node_has_a_table_and_nobody_holds_itself(joined: Network) -> None:
    assert all(len(t) > 0 for t in joined.tables)
    assert all(t.own_id not in t for t in joined.tables)
    assert joined.build_messages > 0


def test_with_no_dead_nodes_lookups_find_exactly_the_k_closest_live_nodes(joined: Network) -> None:
    stats = joined.run(SimConfig(nodes=500, dead=0.0, lookups=150, seed=3))
    assert stats.exact_k == 1.0
    assert stats.success == 1.0
    assert stats.hops_p99 <= 4


def test_with_30_percent_dead_lookups_still_find_the_closest_live_node(joined: Network) -> None:
    stats = joined.run(SimConfig(nodes=500, dead=0.3, lookups=150, seed=3))
    assert stats.success >= 0.99
    # Dead peers cost timeouts, so lookups take longer than without them.
    assert stats.time_p50_ms > 1000 * 0.05


def test_with_loss_lookups_still_succeed(joined: Network) -> None:
    stats = joined.run(SimConfig(nodes=500, loss=0.05, lookups=100, seed=3))
    assert stats.success >= 0.99


def test_block_lookups_find_the_value_and_stop_early(joined: Network) -> None:
    node = joined.run(SimConfig(nodes=500, lookups=100, seed=4))
    block = joined.run(SimConfig(nodes=500, lookups=100, seed=4, mode="block"))
    assert block.success == 1.0
    assert block.messages_mean < node.messages_mean


def test_the_same_seed_gives_the_same_figures(joined: Network) -> None:
    a = joined.run(SimConfig(nodes=500, dead=0.1, loss=0.01, lookups=30, seed=9))
    b = joined.run(SimConfig(nodes=500, dead=0.1, loss=0.01, lookups=30, seed=9))
    assert (a.hops, a.messages_mean, a.time_p99_ms) == (b.hops, b.messages_mean, b.time_p99_ms)


def test_the_global_view_build_fills_each_bucket_with_min_k_and_the_nodes_in_its_range() -> None:
    net, _ = build_network(300, k=8, build="oracle", seed=5)
    ids = sorted(net.ids)
    for table in net.tables[:40]:
        own = table.own_id
        for index in range(ID_BITS - 1, ID_BITS - 14, -1):
            lo = ((own >> index) ^ 1) << index
            in_range = bisect.bisect_left(ids, lo + (1 << index)) - bisect.bisect_left(ids, lo)
            assert len(table.bucket(index)) == min(8, in_range)


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile([7], 99) == 7


def test_the_command_prints_the_table_and_writes_a_csv(tmp_path, capsys) -> None:
    out = tmp_path / "sim.csv"
    assert main(["--nodes", "150", "--dead", "0", "0.3", "--lookups", "20", "--csv", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "hops p50" in printed and "150 nodes built by join" in printed
    rows = list(csv.DictReader(out.open()))
    assert [r["dead"] for r in rows] == ["0.0", "0.3"]
    assert {"hops_p50", "hops_p99", "messages_mean", "success", "table_mean"} <= rows[0].keys()


def test_the_plot_is_written_when_matplotlib_is_installed(tmp_path) -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        skip_unless_ci("matplotlib is not installed")
    png = tmp_path / "hops.png"
    assert main(["--nodes", "60", "120", "--lookups", "10", "--plot", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_command_refuses_a_dead_fraction_of_one() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--nodes", "10", "--dead", "1.0"])
    assert exc.value.code == 2

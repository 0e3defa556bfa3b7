"""The Prometheus text format written by `engine.metrics`."""

from __future__ import annotations

import threading

import pytest

from engine.metrics import Counter, Gauge, Histogram, Metrics


def test_a_counter_renders_help_type_and_one_sample_per_label_value():
    counter = Counter("x_total", "Things.\nCounted.", ("kind",))
    counter.inc("b")
    counter.inc("a", amount=2.5)
    counter.inc("b")
    assert counter.render() == [
        "# HELP x_total Things.\\nCounted.",
        "# TYPE x_total counter",
        'x_total{kind="a"} 2.5',
        'x_total{kind="b"} 2',
    ]


def test_label_values_are_escaped():
    gauge = Gauge("info", "Info.", ("v",))
    gauge.set('a"b\\c\nd', value=1)
    assert gauge.render()[-1] == 'info{v="a\\"b\\\\c\\nd"} 1'


def test_a_counter_refuses_to_go_down_and_wrong_labels():
    counter = Counter("x_total", "Things.", ("kind",))
    with pytest.raises(ValueError, match="a counter only goes up"):
        counter.inc("a", amount=-1)
    with pytest.raises(ValueError, match=r"takes the labels \('kind',\)"):
        counter.inc()


def test_a_histogram_renders_cumulative_buckets_sum_and_count():
    histogram = Histogram("lat_seconds", "Latency.", (0.1, 0.01, 1.0))
    for value in (0.005, 0.05, 0.05, 5.0):
        histogram.observe(value)
    assert histogram.render() == [
        "# HELP lat_seconds Latency.",
        "# TYPE lat_seconds histogram",
        'lat_seconds_bucket{le="0.01"} 1',
        'lat_seconds_bucket{le="0.1"} 3',
        'lat_seconds_bucket{le="1"} 3',
        'lat_seconds_bucket{le="+Inf"} 4',
        "lat_seconds_sum 5.105",
        "lat_seconds_count 4",
    ]


def test_a_histogram_needs_distinct_buckets():
    with pytest.raises(ValueError, match="buckets must be distinct and not empty"):
        Histogram("h", "H.", (0.1, 0.1))


def test_gauge_replace_drops_the_samples_not_given():
    gauge = Gauge("model_info", "Models.", ("version",))
    gauge.replace({("1",): 1.0})
    gauge.replace({("2",): 1.0})
    assert gauge.render()[2:] == ['model_info{version="2"} 1']


def test_counting_from_many_threads_loses_nothing():
    metrics = Metrics()

    def work() -> None:
        for _ in range(1000):
            metrics.decisions.inc("allow")
            metrics.score_seconds.observe(0.001)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert metrics.decisions.value("allow") == 8000 and metrics.score_seconds.count == 8000


def test_the_arbiter_families_render_in_order_ending_with_a_newline():
    metrics = Metrics()
    metrics.decisions.inc("decline")
    metrics.dependency_errors.inc("redis")
    metrics.notifications.mirror({("delivered",): 3})
    text = metrics.render()
    assert text.endswith("\n")
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")]
    assert names == [
        "arbiter_decisions_total", "arbiter_score_seconds", "arbiter_model_info",
        "arbiter_dependency_errors_total", "arbiter_notifications_total",
        "arbiter_journal_decisions", "arbiter_store_writes_total",
    ]  # fmt: skip
    assert 'arbiter_decisions_total{action="decline"} 1\n' in text
    assert 'arbiter_dependency_errors_total{dependency="redis"} 1\n' in text
    assert 'arbiter_notifications_total{outcome="delivered"} 3\n' in text

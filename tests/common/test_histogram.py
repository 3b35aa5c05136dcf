import numpy as np

from common import histogram as h


def test_scalar_and_vector_buckets_agree():
    values = [-5, 0, 1, 999, 1000, 1999, 2000, 3_999, 4_000, 10**6, 10**12, 10**16]
    one, many = h.new(), h.new()
    for v in values:
        h.add(one, v)
    h.add_many(many, np.array(values))
    assert one == many
    assert h.bucket(-5) == 0 and h.bucket(999) == 1 and h.bucket(1999) == 1
    assert h.bucket(2000) == 2 and h.bucket(10**12) == 30 and h.bucket(10**16) == h.BUCKETS - 1
    assert h.bucket(10**16, 24) == 23  # a shorter histogram clamps to its own last bucket


def test_prometheus_buckets_and_percentile():
    hist = h.new()
    h.add_many(hist, [1500] * 90 + [300_000] * 10)
    b = h.log2_buckets(hist)
    assert b[-1] == ("+Inf", 100.0)
    assert dict(b)[repr(2e-6)] == 90.0  # cumulative
    assert h.log2_percentile(hist, 0.5) == 2e-6
    assert h.log2_percentile(hist, 0.99) == 512e-6  # 300 us lies below 2**9 us
    assert h.log2_percentile(h.new(), 0.5) is None

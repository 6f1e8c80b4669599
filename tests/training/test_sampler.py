"""The P×K identity sampler: batch structure, per-epoch reshuffle, disjoint ranks, small identities, resume."""

from __future__ import annotations

from collections import Counter

import pytest

from differ_core.sampler import IdentityBatchSampler


def _pids() -> list[int]:
    # 10 identities with 1..10 images each (interleaved, like a manifest sorted by file name)
    out = []
    for n in range(1, 11):
        out += [n - 1] * n
    return sorted(out, key=lambda p: (hash(p) % 7, p))


def test_batches_are_p_identities_by_k_images():
    pids = _pids()
    s = IdentityBatchSampler(pids, P=3, K=2, seed=0)
    batches = list(s)
    assert len(batches) == len(s) > 0
    for b in batches:
        assert len(b) == 6
        ids = [pids[i] for i in b]
        counts = Counter(ids)
        assert len(counts) == 3 and set(counts.values()) == {2}


def test_identity_with_fewer_than_k_images_is_sampled_with_replacement():
    pids = [0, 1, 1, 1, 2, 2, 2, 3, 3, 3]  # identity 0 has one image
    s = IdentityBatchSampler(pids, P=2, K=3, seed=0)
    seen = [b for e in range(6) for b in s.batches(e)]
    with_zero = [b for b in seen if pids[b[0]] == 0 or 0 in [pids[i] for i in b]]
    assert with_zero, "identity 0 must still be sampled"
    for b in with_zero:
        assert [i for i in b if pids[i] == 0] == [0, 0, 0]


def test_reshuffled_every_epoch_and_reproducible():
    pids = _pids()
    a = IdentityBatchSampler(pids, P=2, K=2, seed=3)
    b = IdentityBatchSampler(pids, P=2, K=2, seed=3)
    assert a.batches(0) == b.batches(0)
    assert a.batches(0) != a.batches(1)
    assert IdentityBatchSampler(pids, P=2, K=2, seed=4).batches(0) != a.batches(0)
    assert all(len(a.batches(e)) == len(a) for e in range(8))  # fixed steps per epoch


def test_ranks_get_disjoint_batches_of_equal_count():
    pids = _pids()
    ranks = [IdentityBatchSampler(pids, P=2, K=2, seed=1, num_replicas=3, rank=r) for r in range(3)]
    single = IdentityBatchSampler(pids, P=2, K=2, seed=1)
    assert len({len(r) for r in ranks}) == 1 and len(ranks[0]) == len(single) // 3
    for epoch in range(5):
        sets = [set(i for b in r.batches(epoch) for i in b) for r in ranks]
        assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    with pytest.raises(ValueError, match="rank"):
        IdentityBatchSampler(pids, P=2, K=2, num_replicas=2, rank=2)


def test_state_dict_resumes_mid_epoch():
    pids = _pids()
    s = IdentityBatchSampler(pids, P=2, K=2, seed=5)
    s.set_epoch(2, start_batch=3)
    state = s.state_dict()
    t = IdentityBatchSampler(pids, P=2, K=2, seed=5)
    t.load_state_dict(state)
    assert list(t) == s.batches(2)[3:]
    with pytest.raises(ValueError, match="seed"):
        IdentityBatchSampler(pids, P=2, K=2, seed=6).load_state_dict(state)


def test_too_few_identities_is_an_error():
    with pytest.raises(ValueError, match="only 2"):
        IdentityBatchSampler([0, 0, 1, 1], P=3, K=2)

"""Balanced sampler quotas, determinism, resume and pseudo-domains; the shard dataset under DataLoader workers."""
from __future__ import annotations

import h5py
import numpy as np
import pandas as pd
import pytest
import torch
from fas_train.data import ShardDataset, make_loader, to_device
from fas_train.sampler import BalancedBatchSampler
from pipeline.shards import write_shard

# three domains with unequal class sizes: (domain, label) -> count
SIZES = {(0, 1): 12, (0, 0): 30, (1, 1): 9, (1, 0): 20, (2, 1): 15, (2, 0): 8}
DOMAINS = np.concatenate([np.full(n, d) for (d, _), n in SIZES.items()])
LABELS = np.concatenate([np.full(n, c) for (_, c), n in SIZES.items()])


def test_every_batch_meets_the_quota_in_domain_order():
    sampler = BalancedBatchSampler(DOMAINS, LABELS, per_class=2, seed=1)
    assert len(sampler) == 4 and sampler.batch_size == 12  # smallest group (8) // 2
    for batch in sampler:
        assert [(int(DOMAINS[i]), int(LABELS[i])) for i in batch] == \
            [(d, c) for d in (0, 1, 2) for c in (1, 0) for _ in range(2)]


def test_no_repeats_within_an_epoch_unless_a_group_is_too_small():
    sampler = BalancedBatchSampler(DOMAINS, LABELS, per_class=2, seed=1)
    drawn = np.concatenate(list(sampler))
    assert len(drawn) == len(set(drawn))
    longer = BalancedBatchSampler(DOMAINS, LABELS, per_class=2, seed=1, batches_per_epoch=6)  # quota 12 per group
    drawn = np.concatenate(list(longer))
    counts = pd.Series(drawn).value_counts()
    repeated = set(zip(DOMAINS[counts[counts > 1].index], LABELS[counts[counts > 1].index]))
    assert repeated == {(1, 1), (2, 0)}  # only the groups of 9 and 8 samples, smaller than 12
    assert counts.max() == 2


def test_batches_are_deterministic_per_seed_and_epoch_and_resume_mid_epoch():
    a = BalancedBatchSampler(DOMAINS, LABELS, per_class=3, seed=7)
    b = BalancedBatchSampler(DOMAINS, LABELS, per_class=3, seed=7)
    assert list(a) == list(b)
    a.set_epoch(1)
    assert list(a) != list(b)
    full = list(a)
    a.set_epoch(1, start_batch=1)
    assert list(a) == full[1:]
    assert list(BalancedBatchSampler(DOMAINS, LABELS, per_class=3, seed=8)) != list(b)


def test_unbalanced_batches_draw_each_domain_whole_whatever_the_class():
    """CCDD's ``balanced=false``: 2 x per_class samples per domain, in the domain's own class mix."""
    sampler = BalancedBatchSampler(DOMAINS, LABELS, per_class=2, seed=1, class_balanced=False)
    assert len(sampler) == 5 and sampler.batch_size == 12  # smallest domain (23) // 4
    batches = list(sampler)
    for batch in batches:
        assert [int(DOMAINS[i]) for i in batch] == [d for d in (0, 1, 2) for _ in range(4)]
    drawn = np.concatenate(batches)
    assert len(drawn) == len(set(drawn))  # no repeats within an epoch
    live_per_domain0 = [int(LABELS[b[:4]].sum()) for b in batches]
    assert len(set(live_per_domain0)) > 1  # not 2 live + 2 spoof every time
    for rank in (0, 1):  # under DDP each process keeps its half of each domain's block
        half = list(BalancedBatchSampler(DOMAINS, LABELS, per_class=2, seed=1, class_balanced=False, rank=rank, world=2))
        assert [b[:2] for b in half] == [b[2 * rank:2 * rank + 2] for b in batches]


def test_pseudo_domains_change_the_batches():
    sampler = BalancedBatchSampler(DOMAINS, LABELS, per_class=2, seed=0)
    before = list(sampler)
    pseudo = (np.arange(len(LABELS)) % 2)  # two pseudo-domains cutting across datasets
    sampler.set_domains(pseudo)
    after = list(sampler)
    assert after != before and sampler.batch_size == 8
    for batch in after:
        assert [(int(pseudo[i]), int(LABELS[i])) for i in batch] == [(d, c) for d in (0, 1) for c in (1, 0) for _ in range(2)]
    with pytest.raises(ValueError, match="domain 0 has no spoof sample"):
        sampler.set_domains(np.where(LABELS == 0, 5, pseudo))


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    folder = tmp_path_factory.mktemp("shards")
    rng = np.random.default_rng(0)
    rows = []
    for s in range(2):
        n = 40
        data = {"rgb": rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8),
                "hsv": rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8),
                "lbp": rng.integers(0, 256, (n, 3, 16, 16), dtype=np.uint8),
                "depth": rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8),
                "label": (np.arange(n) % 2).astype(np.uint8), "domain": (np.arange(n) // 20 + 2 * s).astype(np.uint8),
                "attack": np.zeros(n, np.uint8), "video_id": np.array([f"v{s}{i}" for i in range(n)], dtype=object),
                "frame_index": np.zeros(n, np.int32), "box": np.zeros((n, 4), np.float32),
                "landmarks": np.zeros((n, 5, 2), np.float32), "score": np.ones(n, np.float32)}
        if s == 0:  # the first shard also holds depth estimates: a constant map per sample, then a ramp
            data["depth_estimate"] = np.broadcast_to((np.arange(n) * 5 + 10).astype(np.uint8)[:, None, None, None],
                                                     (n, 1, 4, 4)).copy()
            data["depth_estimate"][-1, 0] = np.array([0, 80, 160, 240], np.uint8)[None, :]
        write_shard(folder / f"shard-{s:05d}.h5", data, {"config_hash": "t"})
        rows += [{"shard": f"shard-{s:05d}.h5", "row": i, "label": int(data["label"][i]),
                  "domain": int(data["domain"][i])} for i in range(n)]
    return folder, pd.DataFrame(rows)


def test_dataset_reads_the_right_rows(shards):
    folder, samples = shards
    dataset = ShardDataset(folder, samples, channels=("rgb", "hsv"))
    item = dataset[45]
    assert item["image"].dtype == torch.uint8 and item["image"].shape == (6, 16, 16)
    assert (item["label"], item["domain"]) == (samples.loc[45, "label"], samples.loc[45, "domain"])
    with h5py.File(folder / "shard-00001.h5", "r") as f:  # row 5 of the second shard
        assert np.array_equal(item["image"][:3].numpy(), f["rgb"][5]) and np.array_equal(item["image"][3:].numpy(), f["hsv"][5])
        assert np.array_equal(item["depth"].numpy(), f["depth"][5])
    batch = to_device(dataset.__getitems__([0, 1]), "cpu")
    assert batch["image"].dtype == torch.float32 and 0 <= batch["image"].min() and batch["image"].max() <= 1


def test_depth_estimate_is_served_as_an_image_channel_and_the_target_never(shards):
    folder, samples = shards
    dataset = ShardDataset(folder, samples, channels=("rgb", "depth_estimate"))
    batch = dataset.__getitems__([3, 7, 39])
    assert batch["image"].shape == (3, 6, 16, 16)
    estimate = batch["image"][:, 3:]
    assert torch.equal(estimate[:, 0], estimate[:, 1]) and torch.equal(estimate[:, 0], estimate[:, 2])
    assert (estimate[0] == 25).all() and (estimate[1] == 45).all()  # constant maps stay constant at 4x the size
    ramp = estimate[2, 0].float()
    assert (ramp[:, 1:] >= ramp[:, :-1]).all() and ramp[0, 0] == 0 and ramp[0, -1] == 240  # ramp kept, no overshoot
    assert torch.equal(batch["image"][:, :3], ShardDataset(folder, samples, ("rgb",)).__getitems__([3, 7, 39])["image"])
    with pytest.raises(ValueError, match="training target"):
        ShardDataset(folder, samples, channels=("rgb", "depth"))
    with pytest.raises(ValueError, match=r"shard-00001.h5: the shard has no \['depth_estimate'\].*store_estimate"):
        dataset.__getitems__([45])


@pytest.mark.parametrize("context", ["fork", "spawn"])
def test_loader_workers_give_the_same_batches(shards, context):
    folder, samples = shards
    dataset = ShardDataset(folder, samples)
    sampler = BalancedBatchSampler(samples["domain"], samples["label"], per_class=2, seed=3)
    serial = [b["index"].tolist() for b in make_loader(dataset, sampler, workers=0)]
    parallel = list(make_loader(dataset, sampler, workers=2, multiprocessing_context=context))
    assert [b["index"].tolist() for b in parallel] == serial
    first = torch.stack([dataset[i]["image"] for i in serial[0]])
    assert torch.equal(parallel[0]["image"], first)


@pytest.mark.parametrize("compression", ["lzf", "gzip"])
def test_compressed_shards_read_the_same_samples(tmp_path, compression):
    rng = np.random.default_rng(5)
    n = 6
    data = {"rgb": rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), "hsv": rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8),
            "lbp": rng.integers(0, 256, (n, 3, 8, 8), dtype=np.uint8), "depth": rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8),
            "label": np.array([1, 0] * 3, np.uint8), "domain": np.zeros(n, np.uint8), "attack": np.zeros(n, np.uint8),
            "video_id": np.array(["v"] * n, dtype=object), "frame_index": np.arange(n, dtype=np.int32),
            "box": np.zeros((n, 4), np.float32), "landmarks": np.zeros((n, 5, 2), np.float32), "score": np.ones(n, np.float32)}
    write_shard(tmp_path / "c.h5", data, {"config_hash": "t"}, compression=compression)
    samples = pd.DataFrame({"shard": "c.h5", "row": range(n), "label": data["label"], "domain": 0})
    batch = ShardDataset(tmp_path, samples, channels=("rgb", "lbp")).__getitems__([4, 1])
    assert np.array_equal(batch["image"][0, :3].numpy(), data["rgb"][4])
    assert np.array_equal(batch["image"][1, 3:].numpy(), data["lbp"][1])
    assert np.array_equal(batch["depth"][0].numpy(), data["depth"][4]) and batch["label"].tolist() == [1, 0]


def test_threaded_raw_reads_equal_hdf5_reads_and_a_truncated_shard_is_named(shards, tmp_path):
    folder, samples = shards
    order = list(np.random.default_rng(1).permutation(len(samples)))
    threaded = ShardDataset(folder, samples, read_threads=3).__getitems__(order)
    assert ShardDataset(folder, samples)._datasets("shard-00000.h5")["offsets"] is not None  # the raw path ran
    for k, i in enumerate(order):
        shard, row = samples.loc[i, "shard"], samples.loc[i, "row"]
        with h5py.File(folder / shard, "r") as f:
            assert np.array_equal(threaded["image"][k, :3].numpy(), f["rgb"][row])
            assert np.array_equal(threaded["depth"][k].numpy(), f["depth"][row])
    cut = tmp_path / "cut"
    cut.mkdir()
    (cut / "shard-00001.h5").write_bytes((folder / "shard-00001.h5").read_bytes())
    damaged = ShardDataset(cut, samples[samples["shard"] == "shard-00001.h5"])  # opened while whole
    offsets = damaged._datasets("shard-00001.h5")["offsets"]
    last = int(np.argmax(offsets["depth"]))
    with open(cut / "shard-00001.h5", "r+b") as handle:  # then cut inside the last depth chunk
        handle.truncate(int(offsets["depth"][last]) + 4)
    with pytest.raises(ValueError, match=r"cut/shard-00001.h5: sample \d+ of 'depth': read 4 of 16 bytes"):
        damaged.__getitems__([last])
    short = tmp_path / "short"
    short.mkdir()
    (short / "shard-00001.h5").write_bytes((cut / "shard-00001.h5").read_bytes())  # truncated before opening
    with pytest.raises(ValueError, match=r"short/shard-00001.h5: cannot open shard"):
        ShardDataset(short, samples[samples["shard"] == "shard-00001.h5"])


def test_prefetch_keeps_order_passes_errors_and_stops_when_closed():
    from fas_train.data import prefetch
    import threading
    assert list(prefetch(iter(range(10)), depth=2)) == list(range(10))

    def failing():
        yield 1
        raise OSError("disk gone")
    consumer = prefetch(failing())
    assert next(consumer) == 1
    with pytest.raises(OSError, match="disk gone"):
        next(consumer)
    endless = prefetch(iter(lambda: 0, 1), depth=1)
    next(endless)
    endless.close()
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())


def test_prefetch_stops_when_closed_after_the_producer_finished():
    import threading
    import time

    from fas_train.data import prefetch
    consumer = prefetch(iter(range(3)), depth=1)
    next(consumer)
    time.sleep(0.3)  # the producer has read everything and waits to hand over the end
    consumer.close()
    assert not any(t.name == "batch-prefetch" for t in threading.enumerate())


def test_sampler_arguments_are_checked_and_single_class_domains_kept_alone():
    assert len(list(BalancedBatchSampler(DOMAINS, LABELS, per_class=1, seed=0))) == 8  # one per class is a batch
    for kwargs, message in (({"per_class": 0}, "per_class must be >= 1"),
                            ({"per_class": 3, "world": 2}, "per_class 3 must split evenly over 2 processes"),
                            ({"per_class": 2, "world": 2, "rank": 2}, r"rank 2\)"),
                            ({"per_class": 2, "world": 2, "rank": -1}, r"rank -1\)")):
        with pytest.raises(ValueError, match=message):
            BalancedBatchSampler(DOMAINS, LABELS, seed=0, **kwargs)
    with pytest.raises(ValueError, match="labels must be 1 .live. or 0 .spoof."):
        BalancedBatchSampler(DOMAINS, LABELS + 1, per_class=1)
    only_live = np.where(DOMAINS == 2, 1, LABELS)  # domain 2 holds live samples only, as a cluster can
    sampler = BalancedBatchSampler(DOMAINS, only_live, per_class=2, seed=0, single_class_domains=True)
    assert sorted(sampler.groups) == [(0, 0), (0, 1), (1, 0), (1, 1), (2, 1)] and sampler.batch_size == 10
    for batch in sampler:
        assert [(int(DOMAINS[i]), int(only_live[i])) for i in batch] == \
            [(0, 1)] * 2 + [(0, 0)] * 2 + [(1, 1)] * 2 + [(1, 0)] * 2 + [(2, 1)] * 2
    with pytest.raises(ValueError, match="domain 2 has no spoof sample"):
        BalancedBatchSampler(DOMAINS, only_live, per_class=2)
    with pytest.raises(ValueError, match="3 domain labels for 94 samples"):
        sampler.set_domains([0, 1, 2])


def test_domains_draw_their_own_orders_and_a_tiny_group_still_gives_one_batch():
    # two domains alike (10 live, 10 spoof each): their within-domain orders differ (seeded per domain)
    domains, labels = np.repeat([0, 1], 20), np.tile(np.repeat([1, 0], 10), 2)
    batches = np.array(list(BalancedBatchSampler(domains, labels, per_class=5, seed=0)))
    first, second = batches[:, :10].ravel(), batches[:, 10:].ravel() - 20
    assert not np.array_equal(first, second)
    assert len(BalancedBatchSampler(domains, labels, per_class=8, seed=0)) == 1  # 10 // 8
    assert len(BalancedBatchSampler(domains, labels, per_class=20, seed=0)) == 1  # fewer than a block: one
    halves = [list(BalancedBatchSampler(domains, labels, per_class=4, seed=0, world=2, rank=r)) for r in (0, 1)]
    assert all(len(b) == 8 for half in halves for b in half)  # 2 of each of the 4 blocks per process
    only_spoof = np.where(domains == 1, 0, labels)  # domain 1 holds attacks only
    sampler = BalancedBatchSampler(domains, only_spoof, per_class=2, single_class_domains=True)
    assert sorted(sampler.groups) == [(0, 0), (0, 1), (1, 0)]

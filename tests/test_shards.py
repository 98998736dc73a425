"""The shard writer never leaves a partial shard visible, and the reader names what is wrong."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.shards import PER_SAMPLE, ShardError, ShardWriter, open_shard, write_shard


def rows(n, size=8):
    rng = np.random.default_rng(n)
    return {"rgb": rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
            "hsv": rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
            "lbp": rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8),
            "depth": rng.integers(0, 256, (n, 1, 4, 4), dtype=np.uint8), "label": np.ones(n, np.uint8),
            "domain": np.zeros(n, np.uint8), "attack": np.zeros(n, np.uint8),
            "video_id": np.array([f"v{i}" for i in range(n)], dtype=object),
            "frame_index": np.arange(n, dtype=np.int32), "box": np.zeros((n, 4), np.float32),
            "landmarks": np.zeros((n, 5, 2), np.float32), "score": np.ones(n, np.float32)}


def test_written_in_pieces_holds_the_same_samples_and_is_reproducible(tmp_path):
    data = rows(5)
    write_shard(tmp_path / "a.h5", data, {"config_hash": "x"})
    for name in ("b.h5", "c.h5"):
        writer = ShardWriter(tmp_path / name, 5, 8, 4, {"config_hash": "x"})
        writer.write({k: v[:2] for k, v in data.items()})
        writer.write({k: v[2:] for k, v in data.items()})
        writer.commit()
    assert (tmp_path / "b.h5").read_bytes() == (tmp_path / "c.h5").read_bytes()  # no timestamps
    with open_shard(tmp_path / "a.h5") as a, open_shard(tmp_path / "b.h5") as b:
        assert set(PER_SAMPLE) <= set(b)
        assert all(np.array_equal(a[k][:], b[k][:]) for k in PER_SAMPLE)


def test_the_bytes_do_not_depend_on_how_many_rows_wait_for_a_write(tmp_path):
    data, cuts = rows(24), [0, 3, 8, 10, 17, 18, 24]  # pieces like videos of 1 to 7 frames
    for buffer in (1, 4, 64):
        writer = ShardWriter(tmp_path / f"b{buffer}.h5", 24, 8, 4, {"config_hash": "x"}, buffer_rows=buffer)
        for a, b in zip(cuts, cuts[1:]):
            writer.write({k: v[a:b] for k, v in data.items()})
        writer.commit()
    assert (tmp_path / "b1.h5").read_bytes() == (tmp_path / "b4.h5").read_bytes() == (tmp_path / "b64.h5").read_bytes()
    with open_shard(tmp_path / "b4.h5") as f:
        assert all(np.array_equal(f[k][:], data[k]) for k in PER_SAMPLE if k != "video_id")
        assert [v.decode() for v in f["video_id"][:]] == list(data["video_id"])


def test_a_partial_shard_is_never_visible(tmp_path):
    writer = ShardWriter(tmp_path / "s.h5", 5, 8, 4, {"config_hash": "x"})
    writer.write({k: v[:3] for k, v in rows(3).items()})
    with pytest.raises(ValueError, match="3 of 5 samples written"):
        writer.commit()
    with pytest.raises(ValueError, match="6 samples written into a shard of 5"):
        ShardWriter(tmp_path / "t.h5", 5, 8, 4, {}).write(rows(6))
    assert not (tmp_path / "s.h5").exists() and not (tmp_path / "t.h5").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".s.h5")] == []


def test_reader_names_a_truncated_or_missing_shard(tmp_path):
    write_shard(tmp_path / "a.h5", rows(4), {"config_hash": "x"})
    (tmp_path / "cut.h5").write_bytes((tmp_path / "a.h5").read_bytes()[:1000])
    with pytest.raises(ShardError, match=r"cut.h5: not a readable HDF5 file"):
        open_shard(tmp_path / "cut.h5")
    with pytest.raises(ShardError, match=r"gone.h5: shard is missing"):
        open_shard(tmp_path / "gone.h5")


def test_the_sample_order_is_cut_into_full_shards_and_one_remainder():
    from pipeline.assemble import cut
    # videos of 2, 0, 4 and 1 samples into shards of 3: a video may straddle shards, an empty one is in none
    assert cut([2, 0, 4, 1], 3) == [[(0, 0, 2), (2, 0, 1)], [(2, 1, 3)], [(3, 0, 1)]]
    assert cut([3, 3], 3) == [[(0, 0, 3)], [(1, 0, 3)]]
    assert cut([0, 0], 3) == []
    counts = [5, 1, 7, 0, 2, 9]
    shards = cut(counts, 4)
    assert [sum(take for _, _, take in shard) for shard in shards] == [4, 4, 4, 4, 4, 4]
    rows = [(video, offset + k) for shard in shards for video, offset, take in shard for k in range(take)]
    assert rows == [(video, k) for video, n in enumerate(counts) for k in range(n)]  # every sample once, in order

"""The per-step schedules reproduce the official tables of index.json exactly."""
import pytest

from fractal_ext.models.schedules import ar_cfg_schedule, mar_schedule


def mar_tables(index):
    return {k: v for k, v in index["schedules"].items() if k.startswith("mar_")}


def test_every_mar_table_is_reproduced(reference_index):
    tables = mar_tables(reference_index)
    assert len(tables) >= 7
    for key, rows in tables.items():
        seq_len, num_iter = (int(part[3:]) if part.startswith("seq") else int(part[4:]) for part in key.split("_")[1:])
        ours = mar_schedule(seq_len, num_iter, cfg=10.0, cfg_schedule="linear")
        assert len(ours) == len(rows), key
        for step, row in zip(ours, rows):
            assert step.mask_len_next == row["mask_len_next"], (key, row)
            assert step.num_predicted == row["num_predicted"], (key, row)
            assert step.cfg == row["cfg_linear_at_cfg10"], (key, row)
        assert sum(step.num_predicted for step in ours) == seq_len


def test_ar_linear_cfg_is_reproduced(reference_index):
    expected = reference_index["schedules"]["ar_seq256_cfg10"]
    assert ar_cfg_schedule(256, 10.0, "linear") == expected


def test_constant_schedule_and_bad_input():
    assert {s.cfg for s in mar_schedule(16, 4, cfg=3.0, cfg_schedule="constant")} == {3.0}
    assert ar_cfg_schedule(4, 2.0, "constant") == [2.0] * 4
    with pytest.raises(ValueError, match="cfg_schedule"):
        mar_schedule(16, 4, cfg=3.0, cfg_schedule="cosine")
    with pytest.raises(ValueError, match="num_iter"):
        mar_schedule(16, 0)

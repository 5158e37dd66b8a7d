"""Identities of near-duplicate frames (obliviate/data/frames.py): each identity is light augmentations of one
base image, the split is by image (so a forgotten identity's other frames reach val and test), deterministic."""
import json

import numpy as np
import pytest
import torch

from obliviate.errors import UserError
from records import TINY_RECORD


@pytest.fixture(scope="module")
def digits():
    from obliviate.data import load_source
    return load_source("digits")


def test_frames_are_near_copies_of_one_base_image(digits):
    from dataclasses import replace
    from obliviate.data.frames import CONTRAST, NOISE, SHIFT, with_frames
    big = replace(digits, x=torch.nn.functional.interpolate(digits.x, size=(28, 28), mode="bilinear"))
    fr = with_frames(big, 6, 100)                                         # 28 px: the size the study uses
    assert fr.x.shape == (600, 1, 28, 28) and fr.is_test is None and fr.groups.tolist() == sorted(fr.groups.tolist())
    assert (fr.y.view(100, 6) == fr.y.view(100, 6)[:, :1]).all()          # a group is one class
    x = fr.x.flatten(1)
    d = torch.cdist(x, x).fill_diagonal_(float("inf"))
    same = (fr.groups[d.argmin(1)] == fr.groups).float().mean()
    assert same > 0.75                                  # a frame's nearest other image is mostly its own identity's
    assert (fr.x.view(100, 6, -1)[:, 1:] != fr.x.view(100, 6, -1)[:, :1]).any(2).all()   # near copies, not copies
    assert float(fr.x.min()) >= 0 and float(fr.x.max()) <= 1
    again = with_frames(big, 6, 100)
    assert torch.equal(again.x, fr.x) and torch.equal(again.groups, fr.groups)   # deterministic
    assert not torch.equal(with_frames(big, 6, 101).x[:600], fr.x)   # the draw depends on its arguments
    assert SHIFT == 1 and 0 < CONTRAST < 0.5 and 0 < NOISE < 0.1         # the documented light augmentations


def test_image_level_split_puts_forgotten_frames_in_val_and_test(digits):
    from obliviate.data import make_splits
    from obliviate.data.frames import with_frames
    s = make_splits(with_frames(digits, 8, 200), "groups:10", seed=0)
    fg = set(s.forget_groups)
    assert set(s.forget.groups.tolist()) == fg and len(fg) == 10
    assert not fg & set(s.retain.groups.tolist())                        # forget = every train frame of them
    seen = sum(int(g) in fg for g in torch.cat([s.val.groups, s.test.groups]))
    assert seen > 0                                                       # ... but their other frames are held out
    assert len(s.val) + len(s.test) == pytest.approx(0.2 * 1600, abs=2)  # 80/10/10 over images


def test_preset_field_frames(tmp_path):
    from obliviate.data.frames import base_images_needed
    from obliviate.presets import load_preset
    from obliviate.runner import RunConfig, run
    p = tmp_path / "fr.toml"
    p.write_text("frames = 4\n" + TINY_RECORD)
    assert load_preset(p).frames == 4
    board, out = run(RunConfig(preset=str(p), n_models=2, cache=str(tmp_path / "c"), out=str(tmp_path / "r"),
                               report=False, quiet=True))
    assert json.loads((out / "leaderboard.json").read_text())["preset_record"]["frames"] == 4
    # enough base images for max_train after the 80% share and the imbalance
    n = base_images_needed(400, 4, 1.0, 10, 1797)
    assert n * 4 * 0.8 >= 400 and base_images_needed(400, 4, 10.0, 10, 10**6) > n
    bad = tmp_path / "bad.toml"
    bad.write_text("frames = 1\n" + TINY_RECORD)
    with pytest.raises(UserError, match="frames = 1"):
        load_preset(bad)

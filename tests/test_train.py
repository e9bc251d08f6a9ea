"""us4.train: losses, sample pair generation, pretraining, fine-tuning, folds, checkpoints."""
from __future__ import annotations

import copy
import math
from dataclasses import replace

import numpy as np
import pytest
import torch

from us4.errors import TrainError
from us4.train.augment import augment
from us4.train.checkpoint import (
    load_backbone,
    load_pickled_state_dict,
    load_reference_checkpoint,
    load_weights,
    save_weights,
)
from us4.train.config import AugmentConfig, get_config
from us4.train.data import load_videoset
from us4.train.finetune import (
    check_folds,
    class_labels,
    finetune_fold,
    finetune_folds,
    fold_split,
)
from us4.train.losses import nt_xent, semi_supervised_ce
from us4.train.pretrain import pretrain, step_losses
from us4.train.resnet import USCLModel
from us4.train.spg import make_views, mix_views, sample_rows
from us4.train.synthetic import synthetic_tables

SIZE = 32


@pytest.fixture(scope="module")
def pocus_like():
    """15 videos x 6 frames, 3 separable classes, 5 folds, decoded at 32 px."""
    frames, videos = synthetic_tables(n_videos=15, frames_per_video=6, size=48, seed=1)
    return load_videoset(frames, videos, SIZE)


def small_config():
    cfg = get_config("smoke")
    return replace(cfg, input_size=SIZE, pretrain=replace(cfg.pretrain, batch_size=8, warmup_epochs=2))


# --- NT-Xent ---------------------------------------------------------------------------------

def _nt_xent_loop(z1: torch.Tensor, z2: torch.Tensor, t: float) -> float:
    z = torch.cat([z1, z2]).double()
    n2 = z.shape[0]
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))
    total = 0.0
    for i in range(n2):
        pos = (i + n2 // 2) % n2
        num = math.exp(cos(z[i], z[pos]) / t)
        den = sum(math.exp(cos(z[i], z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(num / den)
    return total / n2


@pytest.mark.parametrize("temperature", [0.1, 0.5, 1.0])
def test_nt_xent_equals_loop(temperature):
    g = torch.Generator().manual_seed(int(temperature * 10))
    for n, d in ((2, 3), (5, 8), (9, 16)):
        z1, z2 = torch.randn(n, d, generator=g), torch.randn(n, d, generator=g) * 3
        assert float(nt_xent(z1, z2, temperature)) == pytest.approx(_nt_xent_loop(z1, z2, temperature), rel=1e-5)


# --- sample pair generation ------------------------------------------------------------------

class _RecordingAugment:
    """The real augmentation, keeping its last output so a test can see the augmented frames."""

    def __init__(self, g: torch.Generator):
        self.g, self.last = g, None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.last = augment(x, AugmentConfig(), self.g)
        return self.last


def test_spg_views_share_the_augmented_anchor():
    members = [np.arange(0, 7), np.arange(7, 12), np.arange(12, 20)]
    images = torch.randint(0, 256, (20, 1, 16, 16), dtype=torch.uint8)
    rng = np.random.default_rng(0)
    g = torch.Generator().manual_seed(0)
    record = _RecordingAugment(g)
    lams = []
    for _ in range(30):
        batch = sample_rows(members, np.array([0, 1, 2]), rng, spg=True, alpha=0.5)
        for v, (a, b, c) in zip(batch.videos, batch.rows, strict=True):
            assert len({a, b, c}) == 3 and {a, b, c} <= set(members[v].tolist())
        v1, v2 = make_views(images, batch, record)
        aug = record.last.view(3, 3, 1, 16, 16)
        lam = torch.as_tensor(batch.lam).view(-1, 1, 1, 1)
        torch.testing.assert_close(v1, lam * aug[:, 0] + (1 - lam) * aug[:, 1])
        torch.testing.assert_close(v2, lam * aug[:, 2] + (1 - lam) * aug[:, 1])
        lams.extend(batch.lam.tolist())
    lams = np.array(lams)
    assert ((lams >= 0) & (lams <= 1)).all()
    assert lams.std() > 0.2  # Beta(0.5, 0.5) spreads towards both ends


def test_spg_mix_is_lam_a_plus_one_minus_lam_b():
    a, b, c = torch.full((2, 1, 2, 2), 10.0), torch.full((2, 1, 2, 2), 2.0), torch.full((2, 1, 2, 2), 4.0)
    v1, v2 = mix_views(a, b, c, torch.tensor([0.25, 1.0]))
    assert v1[0].unique().item() == pytest.approx(0.25 * 10 + 0.75 * 2)
    assert v2[0].unique().item() == pytest.approx(0.25 * 4 + 0.75 * 2)
    assert v1[1].unique().item() == 10 and v2[1].unique().item() == 4


def test_spg_short_videos_and_the_no_spg_baseline():
    members = [np.array([3, 4]), np.array([9]), np.arange(10, 15)]
    rng = np.random.default_rng(1)
    for _ in range(20):
        batch = sample_rows(members, np.array([0, 1, 2]), rng, spg=True)
        two, one = batch.rows[0], batch.rows[1]
        assert {two[0], two[2]} == {3, 4} and batch.lam[0] == 1.0  # the two frames, unmixed
        assert list(one) == [9, 9, 9] and batch.lam[1] == 1.0  # the same frame twice
        base = sample_rows(members, np.array([0, 1, 2]), rng, spg=False)
        assert (base.rows == base.rows[:, :1]).all() and (base.lam == 1).all()  # two views of one frame
    images = torch.arange(16, dtype=torch.uint8).view(16, 1, 1, 1).expand(16, 1, 4, 4).contiguous()
    batch = sample_rows(members, np.array([0, 1]), rng, spg=True)
    v1, v2 = make_views(images, batch, lambda x: x.float())
    assert {v1[0].unique().item(), v2[0].unique().item()} == {3.0, 4.0}
    assert v1[1].unique().item() == v2[1].unique().item() == 9.0


# --- semi-supervised term --------------------------------------------------------------------

def test_unlabelled_videos_add_no_supervised_loss():
    logits = torch.randn(6, 4, requires_grad=True)
    labels = torch.tensor([2, -1, 0, -1, 3, -1])
    mask = labels >= 0
    loss = semi_supervised_ce(logits, labels, mask)
    expected = torch.nn.functional.cross_entropy(logits[mask], labels[mask])
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert (logits.grad[~mask] == 0).all() and (logits.grad[mask] != 0).any()

    logits.grad = None
    none = semi_supervised_ce(logits, torch.full((6,), -1), torch.zeros(6, dtype=torch.bool))
    assert float(none.detach()) == 0.0
    none.backward()
    assert (logits.grad == 0).all()


# --- pretraining -----------------------------------------------------------------------------

def test_a_few_pretraining_steps_lower_the_loss(pocus_like):
    cfg = small_config()
    vs = pocus_like
    train_v, val_v = np.flatnonzero(vs.folds != 0), np.flatnonzero(vs.folds == 0)
    labels = vs.label_ids.copy()
    labels[::2] = -1  # half the videos unlabelled

    def fixed_loss(model: USCLModel) -> float:
        m = copy.deepcopy(model).train()
        rng, g = np.random.default_rng(7), torch.Generator().manual_seed(7)
        total = 0.0
        with torch.no_grad():
            for _ in range(4):
                batch = sample_rows(vs.members, train_v, rng, spg=True)
                v1, v2 = make_views(vs.images, batch, lambda x: augment(x, cfg.augment, g))
                y = torch.as_tensor(labels[batch.videos])
                total += float(step_losses(m, v1, v2, y, y >= 0, cfg)[0])
        return total / 4

    torch.manual_seed(3)
    before = fixed_loss(USCLModel(3))  # pretrain() starts from the same weights (same seed)
    result = pretrain(vs, train_v, val_v, labels, 3, cfg, spg=True, device=torch.device("cpu"), seed=3, epochs=8)
    after = fixed_loss(result.model)
    assert after < 0.9 * before, (before, after)
    assert len(result.history) == 8 and all(h["val_loss"] is not None for h in result.history)
    assert result.history[result.best_epoch]["val_loss"] == result.best_val_loss
    assert result.history[-1]["loss"] < result.history[0]["loss"]


# --- fine-tuning and folds -------------------------------------------------------------------

def test_finetune_on_a_separable_set_beats_chance(pocus_like):
    cfg = small_config()
    dev = torch.device("cpu")
    folds = finetune_folds(pocus_like, None, cfg, device=dev, seed=0, epochs=4)
    cm = np.sum([f.honest_confusion for f in folds], axis=0)
    assert cm.sum() == len(pocus_like.images)
    assert np.trace(cm) / cm.sum() > 0.8  # chance is 1/3
    # the augmented path (trunk run per step) learns too
    cfg_aug = replace(cfg, finetune=replace(cfg.finetune, augment=True))
    labels = class_labels(pocus_like, cfg.finetune.classes)
    one = finetune_fold(pocus_like, np.flatnonzero(labels >= 0), labels, 1, None, cfg_aug, device=dev, seed=0, epochs=4)
    assert one.test_accuracy[-1] > 0.8
    assert max(one.test_accuracy) == one.test_accuracy[one.best_epoch]


def test_folds_never_share_a_video(pocus_like):
    vs = pocus_like
    videos = np.arange(len(vs))
    check_folds(vs, videos, 5)
    tested = []
    for k in range(5):
        train, test = fold_split(vs, videos, k)
        assert not set(train) & set(test) and len(train) + len(test) == len(videos)
        train_rows, _ = vs.rows_of(train)
        test_rows, _ = vs.rows_of(test)
        assert not set(train_rows.tolist()) & set(test_rows.tolist())
        tested.extend(test.tolist())
    assert sorted(tested) == videos.tolist()  # every video is tested exactly once

    leaky = copy.copy(vs)
    other = int(np.flatnonzero(vs.folds != vs.folds[0])[0])
    leaky.clip_sha256 = list(vs.clip_sha256)
    leaky.clip_sha256[other] = vs.clip_sha256[0]  # the same clip in two folds
    with pytest.raises(TrainError, match="one fold only"):
        check_folds(leaky, videos, 5)


# --- checkpoints -----------------------------------------------------------------------------

def _torchvision_resnet18_shapes() -> dict[str, tuple[int, ...]]:
    """Names and shapes of torchvision's resnet18().state_dict(), written out independently."""
    shapes: dict[str, tuple[int, ...]] = {"conv1.weight": (64, 3, 7, 7)}

    def bn(prefix: str, c: int) -> None:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{prefix}.{name}"] = (c,)
        shapes[f"{prefix}.num_batches_tracked"] = ()

    bn("bn1", 64)
    c_in = 64
    for i, c in enumerate((64, 128, 256, 512), start=1):
        for b in range(2):
            p = f"layer{i}.{b}"
            shapes[f"{p}.conv1.weight"] = (c, c_in if b == 0 else c, 3, 3)
            bn(f"{p}.bn1", c)
            shapes[f"{p}.conv2.weight"] = (c, c, 3, 3)
            bn(f"{p}.bn2", c)
            if b == 0 and c != c_in:
                shapes[f"{p}.downsample.0.weight"] = (c, c_in, 1, 1)
                bn(f"{p}.downsample.1", c)
        c_in = c
    shapes["fc.weight"], shapes["fc.bias"] = (1000, 512), (1000,)
    return shapes


def _tensor(shape: tuple[int, ...], g: torch.Generator) -> torch.Tensor:
    return torch.tensor(7) if shape == () else torch.randn(shape, generator=g)


def test_reference_checkpoint_layout_loads_and_safetensors_round_trip(tmp_path):
    g = torch.Generator().manual_seed(0)
    tv = _torchvision_resnet18_shapes()
    # the reference's ResNetSimCLR: features = resnet children without fc (conv1, bn1, relu, maxpool, layer1..4, avgpool)
    index = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}
    ref = {f"features.{index[k.split('.')[0]]}.{k.split('.', 1)[1]}": _tensor(s, g)
           for k, s in tv.items() if not k.startswith("fc.")}
    ref.update({"l1.weight": _tensor((512, 512), g), "l1.bias": _tensor((512,), g),
                "l2.weight": _tensor((256, 512), g), "l2.bias": _tensor((256,), g),
                "fc.weight": _tensor((12, 256), g), "fc.bias": _tensor((12,), g),
                # the reference also carries an unused mixup head
                "fc1.weight": _tensor((512, 512), g), "fc1.bias": _tensor((512,), g),
                "fc2.weight": _tensor((12, 512), g), "fc2.bias": _tensor((12,), g)})
    torch.save(ref, tmp_path / "best_model.pth")

    model = load_reference_checkpoint(tmp_path / "best_model.pth")
    ours = model.state_dict()
    expected = {k: v for k, v in ref.items() if not k.startswith(("fc1.", "fc2."))}
    assert set(ours) == set(expected)  # no missing, no unexpected keys
    for k, v in expected.items():
        assert torch.equal(ours[k], v), k
    assert model(torch.randn(2, 1, SIZE, SIZE))[2].shape == (2, 12)

    feats = load_backbone(tmp_path / "best_model.pth")
    assert set(feats) == {k.removeprefix("features.") for k in expected if k.startswith("features.")}

    torch.save({k: _tensor(s, g) for k, s in tv.items()}, tmp_path / "resnet18_imagenet.pth")
    assert set(load_backbone(tmp_path / "resnet18_imagenet.pth")) == set(feats)

    save_weights(ours, tmp_path / "model.safetensors", metadata={"variant": "test"})
    back = load_weights(tmp_path / "model.safetensors")
    assert set(back) == set(ours)
    for k, v in ours.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k
    assert set(load_backbone(tmp_path / "model.safetensors")) == set(feats)

    broken = dict(expected)
    del broken["features.7.1.bn2.weight"]
    torch.save(broken, tmp_path / "broken.pth")
    with pytest.raises(TrainError, match="missing features.7.1.bn2.weight"):
        load_reference_checkpoint(tmp_path / "broken.pth")


class _Payload:
    """An object whose unpickling would run code."""

    def __reduce__(self):
        return (open, ("/tmp/us4-test-train-pwned", "w"))


def test_a_foreign_pickle_is_refused(tmp_path):
    import os

    marker = "/tmp/us4-test-train-pwned"
    if os.path.exists(marker):
        os.remove(marker)
    torch.save({"weights": torch.zeros(3), "payload": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(TrainError, match="refused"):
        load_pickled_state_dict(tmp_path / "evil.pth")
    with pytest.raises(TrainError, match="refused"):
        load_reference_checkpoint(tmp_path / "evil.pth")
    assert not os.path.exists(marker)


# --- the command a user runs -----------------------------------------------------------------

SECTIONS = {"format", "code", "config", "device", "environment", "seeds", "releases", "pretraining", "evaluation",
            "results", "comparison", "frame_cache", "time_to_first_step_s", "wall_s"}
OUTPUTS = ["benchmark.json", "benchmark.md", "finetune_curves.png", "fold_accuracy.png", "pretrain_loss.png",
           "simclr_no_spg.safetensors", "uscl.safetensors"]


def _png_size(path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as im:
        im.verify()  # a truncated or corrupt PNG raises
    with Image.open(path) as im:
        assert im.format == "PNG"
        return im.size


@pytest.mark.slow
def test_us4_benchmark_command_end_to_end(phantom_pocus_release, tmp_path):
    """README: `us4 benchmark --pretrain R --eval R --config NAME --out DIR` writes benchmark.json with
    every section, benchmark.md and valid plots, shows progress with an ETA (none with -q), and a rerun
    into the same --out replaces it with the same figures."""
    import json

    from click.testing import CliRunner

    from us4.cli import main
    from us4.hashing import sha256_file

    rel, out = str(phantom_pocus_release), tmp_path / "bench"
    args = ["benchmark", "--pretrain", rel, "--eval", rel, "--config", "tiny", "--out", str(out), "--device", "cpu"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert sorted(p.name for p in out.iterdir()) == OUTPUTS
    record = json.loads((out / "benchmark.json").read_text())
    assert set(record) == SECTIONS
    assert set(record["results"]) == {"uscl", "simclr_no_spg", "random"}
    assert record["device"]["world_size"] == 1 and record["device"]["backend"] is None
    for r in record["results"].values():
        assert len(r["honest"]["fold_accuracy"]) == 5 and 0 <= r["optimistic"]["accuracy"] <= 1
        assert r["honest"]["accuracy"] <= r["optimistic"]["accuracy"]
    for png in out.glob("*.png"):
        assert min(_png_size(png)) > 100
    for stage in ("pretrain uscl epoch 2/2", "pretrain simclr_no_spg epoch 2/2", "finetune random fold 4 epoch 2/2"):
        line = next(x for x in first.stderr.splitlines() if x.startswith(stage))
        assert "images/s" in line and ("ETA" in line or "stage done in" in line), line
    assert "ETA" in first.stderr and first.stdout.startswith("## Benchmark")
    md = (out / "benchmark.md").read_text()
    assert md == first.stdout.split("wrote ")[0].rstrip("\n") + "\n" and "94.2 %" in md  # beside the paper's figure

    checkpoint = sha256_file(out / "uscl.safetensors")
    again = CliRunner().invoke(main, [*args, "-q"])
    assert again.exit_code == 0, again.output
    assert again.stderr == ""  # -q: no progress
    rerun = json.loads((out / "benchmark.json").read_text())
    for key, r in record["results"].items():  # seeded: the same figures, the same weights
        assert {**rerun["results"][key], "wall_s": 0} == {**r, "wall_s": 0}
    assert sha256_file(out / "uscl.safetensors") == checkpoint
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench"]  # replaced whole, nothing left beside it

    other = tmp_path / "notes"
    other.mkdir()
    (other / "todo.txt").write_text("mine")
    refused = CliRunner().invoke(main, [*args[:-4], "--out", str(other), "--device", "cpu"])
    assert refused.exit_code == 1 and "holds something other than an earlier benchmark" in refused.stderr
    assert [p.name for p in other.iterdir()] == ["todo.txt"]


@pytest.mark.slow
def test_benchmark_record_sets_its_figures_beside_the_papers(phantom_pocus_release, tmp_path, monkeypatch):
    """benchmark.json's comparison: the published figures (from one table in config), this run's
    optimistic figure beside each, and every setting in which the run departs from the paper's.
    One release for both roles is verified (hashed) once."""
    import us4.train.benchmark as benchmark
    from us4.release.verify import verify_release
    from us4.train.config import PUBLISHED

    verified = []
    monkeypatch.setattr(benchmark, "verify_release", lambda rel: verified.append(rel.root) or verify_release(rel))
    record = benchmark.run_benchmark(phantom_pocus_release, phantom_pocus_release, "tiny", tmp_path / "b", device="cpu")
    assert verified == [phantom_pocus_release] and record.releases.eval.verified.problems == 0
    comparison = record.comparison
    assert [f.accuracy for f in comparison.published] == [f["accuracy"] for f in PUBLISHED["figures"]]
    uscl = next(f for f in comparison.published if f.initialisation == "uscl")
    assert uscl.accuracy == 0.9419
    assert uscl.this_run_optimistic == record.results["uscl"].optimistic.accuracy
    imagenet = next(f for f in comparison.published if f.initialisation == "imagenet")
    assert imagenet.this_run_optimistic is None  # no --imagenet weights given
    differences = "\n".join(comparison.differences)
    for expected in ("input_size: 32 (paper 224)", "pretrain.epochs: 2 (paper 300)", "finetune.epochs: 2 (paper 100)",
                     f"pretraining corpus: {record.releases.pretrain.name}", "evaluation: "):
        assert expected in differences

"""The classic unlearning baselines (neggrad, neggrad_plus, random_label, bad_teacher, scrub, ssd, l1_sparse,
salun) on the smoke MLP and the smoke CNN, each run through `unlearn_once` as the runner does.

Each method runs three times per model (seed 0, seed 0 again, seed 1), cached for the module. Checked:
same architecture and finite outputs; same seed -> identical weights; different seed -> different weights
(SSD is deterministic by design; NegGrad is deterministic up to float rounding while the forget set fits in
one batch); and, where forgetting is the method's aim and it shows on this tiny problem, a drop of the mean
forget-set confidence (softmax probability of the true label) with retain accuracy above a floor.

Measured on the smoke splits (1,421 retain / 18 forget), originals: MLP forget acc 0.778, forget confidence
0.7773, retain acc 0.9613; CNN forget acc 0.833, forget confidence 0.8043, retain acc 0.950.
"""
import pytest
import torch

from obliviate.methods import get_method
from obliviate.protocol import unlearn_once
from obliviate.training import predict

NAMES = ["neggrad", "neggrad_plus", "random_label", "bad_teacher", "scrub", "ssd", "l1_sparse", "salun"]
MODELS = ["smoke", "smoke_cnn"]

# (minimum drop of mean forget confidence or None, retain-accuracy floor); measured values over seeds 0-3
# (0-7 for scrub / bad_teacher / l1_sparse / neggrad) in the comments, as "forget confidence; retain acc".
EXPECT = {
    "neggrad": {          # 5 steps at lr 1e-4 (the README recipe): a gentle push
        "smoke": (0.002, 0.95),       # 0.7739; 0.962
        "smoke_cnn": (0.008, 0.94),   # 0.7908; 0.9486
    },
    "neggrad_plus": {     # eval mode, proximal 0.1, retain batch 128 / forget 64 (the SCRUB notebook's)
        "smoke": (0.04, 0.95),        # 0.7165-0.7192; 0.9613-0.9641
        "smoke_cnn": (0.07, 0.93),    # 0.6926-0.7131; 0.9423-0.9514
    },
    "random_label": {
        "smoke": (0.2, 0.90),         # 0.2631-0.4471; 0.9233-0.9493
        "smoke_cnn": (0.2, 0.89),     # 0.3246-0.4962; 0.9113-0.9465
    },
    "bad_teacher": {      # two Adam steps at lr 1e-4 (1 epoch, batch 256): tiny but consistent
        "smoke": (0.0005, 0.95),      # 0.7758-0.7763; 0.962
        "smoke_cnn": (0.001, 0.94),   # 0.7995-0.8019; 0.9472-0.9486
    },
    "scrub": {            # large-scale defaults: 3 epochs at lr 5e-4, barely moves here
        "smoke": (0.0003, 0.95),      # 0.7727-0.7766; 0.9613-0.9634
        "smoke_cnn": (None, 0.94),    # 0.7968-0.8079 (either side of 0.8043); 0.9472-0.9521
    },
    "ssd": {              # deterministic; alpha 10 / lambda 1 dampen hard with an 18-example forget batch
        "smoke": (0.15, 0.65),        # 0.5288 (forget acc 0.556); 0.6707
        "smoke_cnn": (0.3, 0.50),     # 0.3573 (forget acc 0.556); 0.5348
    },
    "l1_sparse": {        # fine-tuning on retain: on the CNN forget confidence rises (generalisation)
        "smoke": (None, 0.95),        # 0.7660-0.7737 on the original before the train-order fix (2026-12-03);
                                      # 0.7680 against its successor's 0.7682: retain-only fine-tuning need not
                                      # lower forget confidence; 0.9669
        "smoke_cnn": (None, 0.95),    # 0.8136-0.8369; 0.9648-0.9704
    },
    "salun": {
        "smoke": (0.2, 0.91),         # 0.4141-0.4822; 0.9317-0.9458
        "smoke_cnn": (0.2, 0.91),     # 0.3683-0.4605; 0.9282-0.9451
    },
}

_CACHE = {}


def _flat(model):
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def _stats(model, splits):
    z = predict(model, splits.forget.x).double()
    conf = z.softmax(1)[torch.arange(len(splits.forget.y)), splits.forget.y].mean()
    zr = predict(model, splits.retain.x)
    return {"forget_conf": float(conf), "forget_acc": float((z.argmax(1) == splits.forget.y).double().mean()),
            "retain_acc": float((zr.argmax(1) == splits.retain.y).double().mean())}


def _runs(request, name, fixture):
    key = (name, fixture)
    if key not in _CACHE:
        env = request.getfixturevalue(fixture)
        method = get_method(name)
        _CACHE[key] = [unlearn_once(method, env.original, env.splits, seed) for seed in (0, 0, 1)]
    return request.getfixturevalue(fixture), _CACHE[key]


def test_all_registered_with_documented_defaults():
    for name in NAMES:
        m = get_method(name)
        assert m.defaults, name
        assert "Randomness" in m.doc and "Source" in m.doc, name


@pytest.mark.parametrize("fixture", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_same_architecture_finite_eval(request, name, fixture):
    env, (a, _, _) = _runs(request, name, fixture)
    assert type(a) is type(env.original) and not a.training
    ref = env.original.state_dict()
    assert {k: v.shape for k, v in a.state_dict().items()} == {k: v.shape for k, v in ref.items()}
    for d in (env.splits.forget, env.splits.retain, env.splits.test):
        assert torch.isfinite(predict(a, d.x)).all()
    assert not torch.equal(_flat(a), _flat(env.original)), "the method left the model unchanged"


@pytest.mark.parametrize("fixture", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_seeded(request, name, fixture):
    _, (a, a_again, b) = _runs(request, name, fixture)
    assert torch.equal(_flat(a), _flat(a_again)), "same seed must give identical weights"
    if name == "ssd":        # no randomness at all: fixed data order, no sampling
        assert torch.equal(_flat(a), _flat(b))
    elif name == "neggrad":  # the 18 forget examples are one batch of 256: a seed only permutes its rows
        assert torch.allclose(_flat(a), _flat(b), atol=1e-6)
    else:
        assert (_flat(a) - _flat(b)).abs().max() > 1e-5, "different seeds must give different weights"


@pytest.mark.parametrize("fixture", MODELS)
@pytest.mark.parametrize("name", NAMES)
def test_forgets_and_keeps_retain(request, name, fixture):
    env, (a, _, _) = _runs(request, name, fixture)
    before, after = _stats(env.original, env.splits), _stats(a, env.splits)
    min_drop, floor = EXPECT[name][fixture]
    if min_drop is not None:
        assert before["forget_conf"] - after["forget_conf"] > min_drop, (before, after)
    assert after["retain_acc"] > floor, (before, after)


def test_neggrad_plus_trains_in_eval_mode_near_the_original():
    """`run_neggrad_epoch` trains with the model in eval mode: BatchNorm keeps its running statistics; the
    proximal term (lambda 0.1) holds the weights nearer the original than without it."""
    from obliviate.data import Splits, TensorSet
    from obliviate.models import build_model
    try:
        net = build_model("resnet18", (3, 32, 32), 10, seed=0, width=8).eval()
    except TypeError:
        net = build_model("resnet18", (3, 32, 32), 10, seed=0).eval()
    g = torch.Generator().manual_seed(0)

    def ts(n):
        return TensorSet(torch.rand(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g))
    s = Splits(ts(32), ts(8), ts(8), ts(8), 10)
    hp = {"epochs": 2, "lr": 0.05}
    near, free = (unlearn_once(get_method("neggrad_plus"), net, s, 0, {**hp, "proximal": p}) for p in (0.1, 0.0))
    stats = [k for k in net.state_dict() if "running" in k]
    assert stats and all(torch.equal(near.state_dict()[k], net.state_dict()[k]) for k in stats)
    moved = [k for k, v in net.named_parameters() if not torch.equal(dict(near.named_parameters())[k], v)]
    assert moved
    dist = lambda m: sum(float(((p - q) ** 2).sum().detach()) for p, q in zip(m.parameters(), net.parameters()))
    assert dist(near) < dist(free)

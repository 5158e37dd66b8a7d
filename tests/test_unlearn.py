"""`obliviate unlearn` (issue 36): a user's trained model, a manifest and a forget list -> unlearned weights and an
audit; on a manifest examples/make_example.py generates (240 images of 8 people) and the small CNN below."""
import hashlib
import importlib.util
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve()
FORGET = ["person01", "person04"]


def make_cnn(width: int = 6, classes: int = 3) -> nn.Module:
    """The user's model: `--model tests/test_unlearn.py:make_cnn` (16 x 16 RGB in, 3 classes)."""
    return nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(3, width, 3, padding=1)), ("bn1", nn.BatchNorm2d(width)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(4)), ("flatten", nn.Flatten()), ("fc", nn.Linear(width * 16, classes))]))


def _example():
    spec = importlib.util.spec_from_file_location("make_example", ROOT / "examples" / "make_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """The generated manifest, an original trained on its train rows, a tiny recipe, and the arguments."""
    d = tmp_path_factory.mktemp("unlearn")
    ex = _example()
    images, labels, names, is_test = ex.make_images(people=8, per_person=30, seed=0)
    csv_path = ex.write_manifest(d, images, labels, names, is_test)
    torch.manual_seed(0)
    model = make_cnn()
    x = torch.from_numpy(images[~is_test]).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(labels[~is_test]).long()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(15):
        for j in torch.randperm(len(y)).split(32):
            opt.zero_grad()
            F.cross_entropy(model(x[j]), y[j]).backward()
            opt.step()
    weights = d / "model.safetensors"
    save_file(model.state_dict(), str(weights))
    (d / "recipe.toml").write_text("[recipe]\nepochs = 4\nbatch_size = 32\nlr = 3e-3\nweight_decay = 0.0\n"
                                   "class_weighted = false\n")
    kw = dict(model=f"{HERE}:make_cnn", weights=weights, data=csv_path, forget_groups=",".join(FORGET),
              cache=d / "cache")
    return type("Case", (), dict(dir=d, csv=csv_path, weights=weights, kw=kw, images=images, labels=labels,
                                 names=np.array(names), is_test=is_test))


def _cli(*args):
    from typer.testing import CliRunner
    from obliviate.cli import app
    return CliRunner().invoke(app, ["unlearn", *map(str, args)])


def _args(case, method, out, *extra):
    kw = case.kw
    return ["--model", kw["model"], "--weights", kw["weights"], "--data", kw["data"], "--forget-groups",
            kw["forget_groups"], "--method", method, "--out", out, "--cache", kw["cache"], "-q", *extra]


@pytest.fixture(scope="module")
def outs(case):
    """DIR of the CLI with kookmin and with finetune (seed 0)."""
    got = {}
    for method in ("kookmin", "finetune"):
        r = _cli(*_args(case, method, case.dir / f"out-{method}", "--train-seconds", "2"))
        assert r.exit_code == 0, (r.output, r.exception)
        got[method] = case.dir / f"out-{method}"
    return got


def _original(case):
    m = make_cnn()
    m.load_state_dict(load_file(str(case.weights)))
    return m.train()


def _splits(case):
    from obliviate.unlearn import load_data, read_manifest
    splits, _ = load_data(read_manifest(case.csv), FORGET, seed=0)
    splits.num_classes = 3
    return splits


def test_cli_writes_loadable_weights_and_an_audit_equal_to_direct_evaluation(case, outs):
    from obliviate.metrics.mia import simple_mia
    from obliviate.protocol import evaluate
    out = outs["kookmin"]
    assert sorted(p.name for p in out.iterdir()) == ["audit.html", "audit.json", "model.safetensors"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".out")]      # no temp folder left
    unlearned = make_cnn()
    unlearned.load_state_dict(load_file(str(out / "model.safetensors")), strict=True)
    original = _original(case)
    assert any(not torch.equal(a, b) for a, b in zip(original.state_dict().values(), unlearned.state_dict().values()))
    audit = json.loads((out / "audit.json").read_text())
    splits = _splits(case)
    for key, model in (("before", original), ("after", unlearned)):
        e = evaluate(model, splits)
        for k in ("forget_acc", "retain_acc", "test_acc"):
            assert audit[key][k] == e[k], (key, k)
        assert audit[key]["mia"] == simple_mia(e["loss_forget"][None], e["loss_test"][None])["mia"]
    assert audit["sizes"] == {"retain": 144, "forget": 48, "val": 14, "test": 48}
    prov = audit["provenance"]
    sha = lambda p: hashlib.sha256(Path(p).read_bytes()).hexdigest()
    assert prov["weights_out"]["sha256"] == sha(out / "model.safetensors")
    assert prov["weights_in"]["file_sha256"] == sha(case.weights)
    assert prov["data"]["manifest_sha256"] == sha(case.csv)
    assert prov["forget"]["list_sha256"] == hashlib.sha256(("\n".join(sorted(FORGET)) + "\n").encode()).hexdigest()
    assert prov["method"]["hparams"] == audit["hparams"] and prov["seed"] == 0
    assert prov["preprocessing"]["size"] == [16, 16] and prov["preprocessing"]["normalise"] == "none"
    assert {"obliviate", "torch", "numpy"} <= set(prov["versions"])
    assert audit["fraction_of_training"] == audit["seconds"] / 2
    assert audit["summary"].startswith("kookmin took") and audit["summary"].count(".") >= 1
    page = (out / "audit.html").read_text()
    assert "data:image/png;base64," in page and "What this audit shows" in page and "main{max-width" in page


@pytest.mark.parametrize("name", ["finetune", "kookmin"])
def test_weights_equal_the_method_called_as_run_calls_it(case, outs, name):
    from obliviate.methods import get_method
    from obliviate.plan import RunConfig, method_populations
    from obliviate.protocol import harness_net, unlearn_once
    from obliviate.unlearn import default_reading
    pop = method_populations(RunConfig(methods=[name], reading=default_reading()))[0]
    method, original = get_method(name), _original(case)
    model = unlearn_once(method, original, _splits(case), 0, pop.hparams, net=harness_net(method, original))
    written = load_file(str(outs[name] / "model.safetensors"))
    assert all(torch.equal(written[k], v) for k, v in model.state_dict().items())


def _chunks(cache: Path) -> dict:
    return {p: p.read_bytes() for p in (cache / "chunks").rglob("*.npz")} if (cache / "chunks").exists() else {}


def test_reference_gives_F_and_a_projection_and_resumes_after_kill_9(case, outs, monkeypatch):
    from obliviate.metrics import projection, resample
    from obliviate.unlearn import run_unlearn
    cache, out = case.dir / "ref-cache", case.dir / "out-ref"
    args = _args(case, "kookmin", out, "--reference", 8, "--recipe", case.dir / "recipe.toml")
    args[args.index("--cache") + 1] = cache
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "obliviate.cli", "unlearn", *map(str, args)], env=env, cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(_chunks(cache)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = _chunks(cache)
    assert len(before) >= 2, proc.stderr.read().decode()
    assert not out.exists()                                        # killed: nothing half-written
    monkeypatch.setattr(projection, "DRAWS", 6)                    # the figures' cost, not their code path
    monkeypatch.setattr(projection, "GROUP_DRAWS", 2)
    monkeypatch.setattr(resample, "DRAWS", 40)
    kw = {**case.kw, "cache": cache}
    _, audit = run_unlearn(out=out, method="kookmin", n_reference=8, recipe=case.dir / "recipe.toml", **kw)
    ref = audit["reference"]
    assert ref["models_from_cache"] >= len(before) and ref["models_computed"] + ref["models_from_cache"] == 16
    assert all(p.read_bytes() == b for p, b in before.items())     # resumed, not recomputed
    assert 0 <= ref["forgetting_quality"] <= 1 and len(ref["forgetting_quality_ci"]) == 2
    assert 0 <= ref["projected_forgetting_quality"] <= 1 and ref["project_n"] == 512
    assert np.isfinite(ref["spread_ratio"]) and np.isfinite(ref["location_gap"])
    assert 0 <= ref["retrained"]["forget_acc"] <= 1 and ref["written_run_is_member_0"]
    assert audit["mia_ideal"]["value"] == ref["retrained"]["mia"]
    plain = load_file(str(outs["kookmin"] / "model.safetensors"))  # the run with seed --seed, reference or not
    assert all(torch.equal(plain[k], v) for k, v in load_file(str(out / "model.safetensors")).items())


def _write_weights(path, state):
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


REFUSALS = {   # name -> (change to the arguments, a phrase of the one sentence)
    "missing tensor": (lambda c, d: {"weights": _write_weights(d / "w.safetensors", {
        k: v for k, v in load_file(str(c.weights)).items() if k != "fc.bias"})}, "tensor 'fc.bias' is missing"),
    "unexpected tensor": (lambda c, d: {"weights": _write_weights(d / "w.safetensors", {
        **load_file(str(c.weights)), "extra.weight": torch.zeros(2)})}, "they hold 'extra.weight'"),
    "mis-shaped tensor": (lambda c, d: {"model_kwargs": ["width=4"]},
                          "tensor 'conv1.weight' is (6, 3, 3, 3) in the weights but (4, 3, 3, 3)"),
    "factory not found": (lambda c, d: {"model": f"{HERE}:make_cnm"}, "has no function 'make_cnm'"),
    "group not in data": (lambda c, d: {"forget_groups": "person1"}, "forget group 'person1' is not in the group"),
    "empty forget set": (lambda c, d: {"data": _only_test(c, d, "person01"), "forget_groups": "person01"},
                         "the forget set would be empty"),
    "empty retain set": (lambda c, d: {"forget_groups": ",".join(f"person{i:02d}" for i in range(8))},
                         "the retain set would be empty"),
    "recipe unknown key": (lambda c, d: {"n_reference": 4, "recipe": _text(d / "r.toml", "[recipe]\nepoch = 3\n")},
                           "unknown key 'recipe.epoch' (did you mean 'recipe.epochs'?)"),
    "reference without recipe": (lambda c, d: {"n_reference": 4}, "pass --recipe RECIPE.toml"),
    "pickle weights": (lambda c, d: {"weights": _pickle(d / "w.pkl", load_file(str(c.weights)))},
                       "is a pickle file, which obliviate does not load"),
    "whole pickled model": (lambda c, d: {"weights": _torch_save(d / "w.pt", make_cnn())},
                            "holds pickled Python objects, not only tensors"),
}


def _text(path, text):
    path.write_text(text)
    return path


def _pickle(path, obj):
    path.write_bytes(pickle.dumps(obj))
    return path


def _torch_save(path, obj):
    torch.save(obj, path)
    return path


def _only_test(case, d, person):
    """The manifest with every row of `person` marked test (image paths made absolute)."""
    head, *rows = case.csv.read_text().splitlines()
    rows = [f"{case.dir / r.split(',', 1)[0]},{r.split(',', 1)[1]}" for r in rows]
    return _text(d / "m.csv", "\n".join([head] + [r.replace(",train", ",test") if f",{person}," in r else r
                                                  for r in rows]) + "\n")


@pytest.mark.parametrize("name", sorted(REFUSALS))
def test_refusals_are_one_sentence_and_write_nothing(case, tmp_path, name):
    from obliviate.errors import UserError
    from obliviate.unlearn import run_unlearn
    change, phrase = REFUSALS[name]
    kw = {**case.kw, **change(case, tmp_path)}
    out = tmp_path / "out"
    with pytest.raises(UserError) as e:
        run_unlearn(out=out, method="finetune", **kw)
    msg = str(e.value)
    assert phrase in msg and "\n" not in msg and msg.endswith("."), msg
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_a_raising_factory_shows_the_users_frames_and_the_cli_exits_2(case, tmp_path, monkeypatch, capsys):
    from obliviate.cli import main
    f = _text(tmp_path / "net.py", "def make():\n    raise ValueError('no GPU here')\n")
    out = tmp_path / "out"
    monkeypatch.setattr(sys, "argv", ["obliviate", "unlearn", *map(str, _args(case, "finetune", out))])
    sys.argv[sys.argv.index("--model") + 1] = f"{f}:make"
    with pytest.raises(SystemExit) as e:
        main()
    err = capsys.readouterr().err
    assert e.value.code == 2 and "model factory" in err and "ValueError: no GPU here" in err
    assert str(f) in err and "raise ValueError" in err and "obliviate/unlearn.py" not in err
    assert not out.exists()
    (out.mkdir(), (out / "keep.txt").write_text("mine"))            # a non-empty DIR is refused, left as it was
    with pytest.raises(SystemExit):
        main()
    assert "is not empty" in capsys.readouterr().err and (out / "keep.txt").read_text() == "mine"


def test_python_entry_with_plain_datasets_and_kaggle_dict_batches(case):
    import obliviate
    from torch.utils.data import DataLoader, Dataset, TensorDataset
    x = torch.from_numpy(case.images).permute(0, 3, 1, 2).float() / 255
    y = torch.from_numpy(case.labels).long()
    people = torch.from_numpy(np.unique(case.names, return_inverse=True)[1])
    f = torch.from_numpy(np.isin(case.names, FORGET))
    t = torch.from_numpy(case.is_test)
    parts = {k: m & ~t if k != "test" else t for k, m in (("retain", ~f), ("forget", f), ("test", t))}
    model = _original(case)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    plain = {k: TensorDataset(x[m], y[m]) for k, m in parts.items()}
    m1, a1 = obliviate.unlearn(model, plain["retain"], plain["forget"], plain["test"], method="finetune", epochs=2)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())        # the caller's model kept
    assert any(not torch.equal(state[k], v) for k, v in m1.state_dict().items())
    assert a1["hparams"]["epochs"] == 2 and a1["after"]["test_acc"] is not None and a1["after"]["mia"] is not None

    class Faces(Dataset):              # the Kaggle dataset's examples
        def __init__(self, m):
            self.i = torch.nonzero(m).flatten()

        def __len__(self):
            return len(self.i)

        def __getitem__(self, j):
            i = self.i[j]
            return {"image": x[i], "age_group": y[i], "age": y[i], "person_id": people[i], "image_id": i}

    dicts = {k: DataLoader(Faces(m), batch_size=16, shuffle=True) for k, m in parts.items()}
    m2, a2 = obliviate.unlearn(model, dicts["retain"], dicts["forget"], dicts["test"], method="finetune", epochs=2)
    assert all(torch.equal(v, m2.state_dict()[k]) for k, v in m1.state_dict().items())   # read in order: same run
    assert a2["before"] == a1["before"] and a2["after"] == a1["after"]

    def unlearning(net, retain_loader, forget_loader, val_loader):       # a Kaggle submission: dict batches
        opt = torch.optim.SGD(net.parameters(), lr=0.01)
        net.train()
        for batch in retain_loader:
            opt.zero_grad()
            F.cross_entropy(net(batch["image"]), batch["age_group"]).backward()
            opt.step()
        net.eval()

    m3, a3 = obliviate.unlearn(model, dicts["retain"], dicts["forget"], method=unlearning)
    assert a3["method"] == "unlearning" and a3["after"]["test_acc"] is None and a3["after"]["mia"] is None
    assert any(not torch.equal(state[k], v) for k, v in m3.state_dict().items())


def test_data_reading_draws_and_records_splits_and_preprocessing(case, tmp_path):
    from PIL import Image
    from obliviate.unlearn import forget_list, load_data, read_manifest
    _, *rows = case.csv.read_text().splitlines()
    plain = _text(tmp_path / "m.csv", "path,label,group\n" + "".join(
        f"{case.dir / r.split(',')[0]},{r.split(',')[1]},{r.split(',')[2]}\n" for r in rows))   # no split column
    groups, rec = forget_list("person01", _text(tmp_path / "f.txt", "# to forget\nperson04\n\nperson01\n"))
    assert groups == ["person01", "person04"] and "file_sha256" in rec
    splits, r = load_data(read_manifest(plain), groups, seed=3, size=8, pixel_scale=255, normalise="per-channel")
    assert tuple(splits.retain.x.shape[1:]) == (3, 8, 8) and r["preprocessing"]["mode"] == "RGB"
    assert r["test"] == 24 and len(r["test_lines"]) == 24 and r["test_from"].startswith("10% of all rows")
    forgotten = {i + 2 for i, row in enumerate(rows) if row.split(",")[2] in groups}
    assert r["forget_groups_in_test_rows"] == len(forgotten & set(r["test_lines"])) > 0   # they stay in test
    train = torch.cat([splits.retain.x, splits.forget.x])
    assert train.mean((0, 2, 3)).abs().max() < 1e-2 and (train.std((0, 2, 3)) / 255 - 1).abs().max() < 1e-3
    assert load_data(read_manifest(plain), groups, seed=3)[0].key != splits.key            # preprocessing in the key
    assert load_data(read_manifest(plain), groups, seed=4)[1]["test_lines"] != r["test_lines"]
    for i, row in enumerate(rows[:12]):                     # greyscale images: one channel, at their own size
        Image.open(case.dir / row.split(",")[0]).convert("L").save(tmp_path / f"g{i}.png")
    grey = _text(tmp_path / "g.csv", "path,label,group,split\n" + "".join(
        f"g{i}.png,{i % 3},p{i % 2},{'test' if i >= 10 else 'train'}\n" for i in range(12)))
    s, r = load_data(read_manifest(grey), ["p0"])
    assert tuple(s.forget.x.shape[1:]) == (1, 16, 16) and r["preprocessing"]["channels"] == 1
    assert float(s.forget.x.max()) <= 1 and r["val_from"].startswith("10% of the retain rows")


def test_hp_preset_reads_the_values_tune_saved(tmp_path):
    from obliviate.errors import UserError
    from obliviate.store import Store
    from obliviate.unlearn import resolve_method
    store = Store(tmp_path)
    store.save_hp_preset("tuned", "digits", "finetune", {"lr": 0.002})
    assert resolve_method("finetune", hp_preset="tuned", cache=tmp_path)[1].hparams["lr"] == 0.002
    assert resolve_method("finetune", {"lr": "0.003"}, "tuned:digits", cache=tmp_path)[1].hparams["lr"] == 0.003
    store.save_hp_preset("tuned", "fashion", "finetune", {"lr": 0.004})
    for preset, phrase in ((None, "for the presets digits, fashion: pass --hp-preset tuned:PRESET"),
                           (":smoke", "holds no values of finetune for preset 'smoke'")):
        with pytest.raises(UserError, match="hyperparameter preset 'tuned' holds") as e:
            resolve_method("finetune", hp_preset="tuned" + (preset or ""), cache=tmp_path)
        assert phrase in str(e.value)


def test_reference_on_two_worker_processes_equals_one_process(case, monkeypatch):
    """--reference's jobs run on local workers too: spawned processes build the user's model from its file
    (models.registry.user_model) and every retrained and unlearned model equals the in-process run's."""
    from obliviate.metrics import projection, resample
    from obliviate.unlearn import run_unlearn
    monkeypatch.setattr(projection, "DRAWS", 6)
    monkeypatch.setattr(projection, "GROUP_DRAWS", 2)
    monkeypatch.setattr(resample, "DRAWS", 40)
    audits = {}
    for workers in (1, 2):
        kw = {**case.kw, "cache": case.dir / f"ref-cache-w{workers}"}
        _, audits[workers] = run_unlearn(out=case.dir / f"out-w{workers}", method="finetune", n_reference=4,
                                         recipe=case.dir / "recipe.toml", workers=workers, **kw)
    one, two = audits[1]["reference"], audits[2]["reference"]
    assert one["models_computed"] == two["models_computed"] == 8
    assert one["forgetting_quality"] == two["forgetting_quality"]
    timing = ("seconds",)
    assert {k: v for k, v in one["retrained"].items() if k not in timing} == \
        {k: v for k, v in two["retrained"].items() if k not in timing}
    assert one["spread_ratio"] == two["spread_ratio"] and one["location_gap"] == two["location_gap"]

"""The bad-input catalogue: one row per mistake a user can make, across the commands. Each must give exit status 2,
exactly one stderr line starting `error:` that contains the row's words, and leave every file that existed before
byte-identical (nothing written, nothing deleted). Adding a case is one line."""

import numpy as np
import pytest
import torch

from conftest import cli, one_line_error, tiny_overrides
from difflab.nets import DiT, DiTConfig
from difflab.runs import resolve_config, train_run

# {run}: a trained class-conditional run (no null label); {tmp}: an empty scratch folder; {file}: an existing text file;
# {npz}: an existing .npz of images; {cache}: the digits feature cache (already built).
CATALOGUE = [
    # train
    ("train --out {run}", "already holds a run"),
    ("train --out {tmp}/a --set nope=1", "unknown config key 'nope'"),
    ("train --out {tmp}/a --set train.lr=NaN", "must be a finite number"),
    ("train --out {tmp}/a --set train.lr=-1", "train.lr must be positive"),
    ("train --out {tmp}/a --set train.seed=9223372036854775808", "train.seed must be in 0 .. 2**63 - 1"),
    ("train --out {tmp}/a --set train.batch_size=0", "train.batch_size must be at least 1"),
    ("train --out {tmp}/a --set train.steps=abc", "must be an integer"),
    ("train --out {tmp}/a --set model.in_channels=3", "model.in_channels"),
    ("train --out {tmp}/a --data /no/such/folder", "/no/such/folder"),
    ("train --out {tmp}/a --config no-such-preset", "unknown config 'no-such-preset'"),
    ("train --out {tmp}/a --config {file}", "is not valid JSON"),
    ("train --out {tmp}/none --resume", "holds no run"),
    ("train --out {run} --resume --force", "contradict"),
    ("train --out {run} --resume --set train.steps=1", "past train.steps=1"),
    ("train --out {run} --resume --set model.model_channels=32", "'model' section differs"),
    ("train --out {file}", "is a file"),
    ("train --out {tmp}/a --set train.device=cuda", "no CUDA GPU is visible"),
    # sample
    ("sample --run {tmp}/none --out {tmp}/x.png", "does not exist"),
    ("sample --run {run} --sampler magic --out {tmp}/x.png", "unknown --sampler 'magic'"),
    ("sample --run {run} --out {npz}", "exists; choose another --out or add --force"),
    ("sample --run {run} --out {tmp}/x.jpg", "must end in .png or .npz"),
    ("sample --run {run} --steps 0 --out {tmp}/x.png", "--steps must be between 1 and T=50"),
    ("sample --run {run} --n 0 --out {tmp}/x.png", "at least 1"),
    ("sample --run {run} --n 100000000000 --out {tmp}/x.png", "need"),
    ("sample --run {run} --sampler ddim --sampler-opt eta=-1 --out {tmp}/x.png", "ddim.eta must be >= 0"),
    ("sample --run {run} --sampler unipc --sampler-opt order=x --out {tmp}/x.png", "must be an integer"),
    ("sample --run {run} --class 10 --out {tmp}/x.png", "must be in 0..9"),
    ("sample --run {run} --guidance cfg --out {tmp}/x.png", "needs a model trained with a null class"),
    ("sample --run {run} --guidance classifier --out {tmp}/x.png", "needs --classifier"),
    ("sample --run {run} --timesteps 5,9 --out {tmp}/x.png", "decreasing"),
    ("sample --run {run} --device foo --out {tmp}/x.png", "unknown device 'foo'"),
    ("sample --run {run} --device cuda --out {tmp}/x.png", "no CUDA GPU is visible"),
    ("sample --run {run} --steps 2 --n 2 --out {file}/x.png", "is a file, not a folder"),
    ("sample --run {run} --n many --out {tmp}/x.png", "invalid int value"),
    # eval, stats, nll
    ("eval --samples {tmp}/none --ref digits:test", "no such file or folder"),
    ("eval --samples digits:test --ref digits:train --metrics bogus", "unknown metric 'bogus'"),
    ("eval --samples digits:test --ref digits:train --features resnet", "unknown feature source 'resnet'"),
    ("eval --samples digits:test --ref digits:train --out {tmp}/r.txt", "must end in .json"),
    ("eval --samples digits:val --ref digits:train", "unknown split 'val'"),
    ("eval --samples {npz} --ref digits:test --features digits --cache-dir {cache}", "the digits feature source needs 1x8x8 images"),
    ("stats --data digits --out {tmp}/s.json", "must end in .npz"),
    ("stats --data digits --out {npz}", "exists"),
    ("nll --run {run} --method bound", "unknown --method 'bound'"),
    ("nll --run {run} --n 0", "at least 1"),
    ("nll --run {run} --data {tmp}/none.npz", "none.npz"),
    # import / export
    ("import guided-diffusion --checkpoint {tmp}/none.pt --out {tmp}/i", "none.pt"),
    ("import guided-diffusion --checkpoint {pt} --out {run}", "already holds a run"),
    ("import guided-diffusion --checkpoint {pt} --out {tmp}/i", "64x64_diffusion.pt"),
    ("import improved-diffusion --checkpoint {file} --out {tmp}/i", "not a released improved-diffusion file name"),
    ("import diffusers {tmp} --out {tmp}/i", "has no config.json"),
    ("import diffusers-vae {tmp} --out {tmp}/i", "has no config.json"),
    ("import diffusers-vae {file} --out {tmp}/i", "is not a folder"),
    ("train --config digits-latent --out {tmp}/a --set latent.autoencoder={tmp}/none", "is missing"),
    ("train --config digits-latent --out {tmp}/a --set latent.autoencoder={run}", "is a diffusion run, not an autoencoder run"),
    ("train --out {tmp}/a --set latent.autoencoder={tmp}/none", "set denoiser.clip_x0=false"),
    ("import dit --checkpoint {dit_other} --out {tmp}/i", "is not a dit-xl-2 checkpoint: it looks like a DiT of depth 1, hidden_size 32"),
    ("import dit --checkpoint {dit_evil} --out {tmp}/i", "loads with weights_only=True"),
    ("train --out {tmp}/a --config digits-dit --set model.patch_size=3", "model.image_size 8 is not divisible by model.patch_size 3"),
    ("export diffusers {run} --out {file}", "is a file"),
    ("export diffusers {tmp}/none --out {tmp}/e", "does not exist"),
    # restoration and the rest
    ("inpaint --run {run} --data digits:test --mask bogus --class 1 --out {tmp}/o.png", "bogus"),
    ("inpaint --run {run} --image {file} --data digits:test --out {tmp}/o.png", "exactly one of --image"),
    ("denoise --run {run} --data digits:test --noise-sigma -1 --out {tmp}/o.png", "noise"),
    ("img2img --run {run} --data digits:test --strength 2 --out {tmp}/o.png", "strength"),
    ("restore --run {run} --data digits:test --out {tmp}/o.png", "needs an image-conditional run"),
    ("config digits --set nope=1", "unknown config key 'nope'"),
    ("model no-such-model", "unknown"),
    ("interpolate --run {run} --seeds 1 2 --frames 1 --out {tmp}/i.png", "--frames"),
    ("classifier train --config digits --out {tmp}/c", "is a diffusion config"),
    ("compare --out {tmp}/cmp", "--runs"),
    ("ablation ddpm --train-steps 0 --out {tmp}/abl", "--train-steps must be at least 1"),
    ("sweep guidance --run {run} --scales 0,a --out {tmp}/sw", "--scales must be comma-separated numbers"),
    # --force validates the whole request before it replaces anything: {npz}, {json}, {png}, {run} and {reports} survive
    ("train --out {run} --force --set model.in_channels=3", "model.in_channels"),
    ("train --out {run} --force --data /no/such/folder", "/no/such/folder"),
    ("sample --run {tmp}/none --out {npz} --force", "does not exist"),
    ("sample --run {run} --steps 0 --out {npz} --force", "--steps must be between 1 and T=50"),
    ("eval --samples {tmp}/none --ref digits:test --out {json} --force", "no such file or folder"),
    ("stats --data {tmp}/none.npz --out {npz} --force", "none.npz"),
    ("interpolate --run {run} --seeds 1 2 --frames 1 --out {png} --force", "--frames"),
    ("inpaint --run {run} --data digits:test --mask bogus --class 1 --out {png} --force", "bogus"),
    ("restore --run {run} --data digits:test --out {png} --force", "needs an image-conditional run"),
    ("import guided-diffusion --checkpoint {pt} --out {run} --force", "64x64_diffusion.pt"),
    ("import improved-diffusion --checkpoint {file} --out {run} --force", "not a released improved-diffusion file name"),
    ("import diffusers {tmp} --out {run} --force", "has no config.json"),
    ("import diffusers-vae {tmp} --out {run} --force", "has no config.json"),
    ("import dit --checkpoint {dit_other} --out {run} --force", "it looks like a DiT of depth 1"),
    ("export diffusers {tmp}/none --out {reports} --force", "does not exist"),
    ("report {tmp}/none --out {reports} --force", "none does not exist"),
    ("sweep guidance --run {run} --scales 0,a --out {reports} --force", "--scales must be comma-separated numbers"),
    ("compare --runs {tmp}/none --out {reports} --force", "none does not exist"),
    ("ablation ddpm --train-steps 0 --out {reports} --force", "--train-steps must be at least 1"),
    ("classifier train --config digits --out {run} --force", "is a diffusion config"),
    # a run of the wrong kind where a command needs another: {clf} is a classifier run
    ("sample --run {clf} --out {tmp}/x.png", "is a classifier run, which makes no images"),
    ("sample --run {run} --guidance classifier --classifier {run} --out {tmp}/x.png", "is a diffusion run, not a classifier run"),
    ("nll --run {clf}", "is a classifier run, not a diffusion"),
    ("inpaint --run {clf} --data digits:test --out {tmp}/o.png", "is a classifier run, not a diffusion"),
    ("restore --run {clf} --data digits:test --out {tmp}/o.png", "is a classifier run, not a diffusion"),
    ("interpolate --run {clf} --seeds 1 2 --out {tmp}/i.png", "is a classifier run, not a diffusion"),
    ("sweep guidance --run {clf} --out {tmp}/sw", "is a classifier run, not a diffusion"),
    ("export diffusers {clf} --out {tmp}/e", "is a classifier run; only diffusion runs export"),
    ("compare --runs {clf} --out {tmp}/cmp", "kind 'classifier', which cannot be sampled"),
    ("classifier train --config {run} --out {tmp}/c", "is a diffusion config"),
    ("train --out {clf} --resume --set model.num_classes=3", "'model' section differs"),
]


class _Pickled:
    """Unpickling it creates the file `marker` (code run by the loader); the snapshot of the world would show it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("catalogue")
    run = train_run(resolve_config("digits", tiny_overrides(steps=2)), root / "run", progress=False)
    clf = train_run(resolve_config("digits-clf", ["train.steps=2", "train.batch_size=8", "train.sample_every=0", "model.model_channels=16",
                                                  "model.channel_mult=[1,2]", "model.num_res_blocks=1", "model.attention_resolutions=[4]",
                                                  "model.norm_groups=8", "process.T=50"]), root / "clf", progress=False)
    (root / "file.txt").write_text("not json, not a checkpoint\n")
    (root / "64x64_diffusion.pt").write_bytes(b"random bytes, not a torch file")
    (root / "dit").mkdir()  # a DiT of another size under the released name, and a DiT-named file of pickled code
    torch.save(DiT(DiTConfig(image_size=8, hidden_size=32, depth=1, num_heads=4, num_classes=10)).state_dict(), root / "dit" / "DiT-XL-2-256x256.pt")
    torch.save({"pos_embed": _Pickled(root / "pwned")}, root / "dit" / "DiT-XL-2-512x512.pt")  # would create root/pwned
    np.savez(root / "samples.npz", arr_0=np.zeros((4, 16, 16, 3), np.uint8))
    (root / "old.json").write_text('{"fid": 1.0}\n')
    (root / "old.png").write_bytes(b"\x89PNG an earlier output")
    reports = root / "reports"  # a folder holding an earlier report of every kind
    for name in ("index.html", "sweep.json", "table.md", "compare.json", "ablation.md", "cells/a/config.json", "model_index.json"):
        (reports / name).parent.mkdir(parents=True, exist_ok=True)
        (reports / name).write_text(f"earlier {name}\n")
    cache = root / "cache"
    from difflab.pipelines.evaluate import build_extractor

    build_extractor("digits", cache_dir=cache)  # built once here, so no case writes into the cache
    return {"run": run, "clf": clf, "pt": root / "64x64_diffusion.pt", "dit_other": root / "dit" / "DiT-XL-2-256x256.pt",
            "dit_evil": root / "dit" / "DiT-XL-2-512x512.pt", "file": root / "file.txt", "npz": root / "samples.npz", "cache": cache, "root": root,
            "json": root / "old.json", "png": root / "old.png", "reports": reports}


def _snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_the_catalogue_is_large_and_spans_the_commands():
    commands = {line.split()[0] for line, _ in CATALOGUE}
    assert len(CATALOGUE) >= 40 and {"train", "sample", "eval", "stats", "nll", "import", "inpaint", "denoise"} <= commands


@pytest.mark.parametrize("line,needle", CATALOGUE, ids=[c[0][:80] for c in CATALOGUE])
def test_bad_input(world, tmp_path, capsys, line, needle):
    tmp = tmp_path / "scratch"
    tmp.mkdir()
    args = line.format(tmp=tmp, **{k: v for k, v in world.items() if k != "root"}).split()
    before, scratch = _snapshot(world["root"]), _snapshot(tmp)
    code, _, err = cli(args, capsys)
    assert needle in one_line_error(code, err), err
    assert _snapshot(world["root"]) == before, "a pre-existing file changed"
    assert _snapshot(tmp) == scratch, f"files written: {sorted(set(_snapshot(tmp)) - set(scratch))}"

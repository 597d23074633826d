"""How much signal is in one DDPO gradient? Independent batches' gradients compared, side by side with a control.

At the base model, draws independent batches of trajectories (groups of ``--per-prompt`` samples of each of
``--prompts`` training prompts, as RL does), turns each batch's rewards into per-prompt normalised advantages
and computes the policy gradient on the LoRA weights (the PPO gradient at ratio 1). If a batch carries
signal, the gradients of two independent batches point the same way: their cosine is clearly above 0. The
control shuffles the advantages within the batch (no link between a sample and its reward), so its cosines
show how large chance agreement is. Sums of k batches give the cosine at k times the batch size.

    python benchmarks/rl_gradient_snr.py [--reward shapes-clip-a] [--batches 8] [-o FILE.json]

A reward whose cosine stays at the control's level for the largest batch has no detectable policy-gradient
signal at that batch size: RL steps on such batches are random walks (the weights move, the reward does not).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from textnorm_t2i.finetune.common import training_prompts
from textnorm_t2i.finetune.config import load_finetune_config
from textnorm_t2i.finetune.ddim import DDIMPolicy, sample_trajectories
from textnorm_t2i.finetune.rl import RLMinibatch, rl_step_loss, train_step_indices
from textnorm_t2i.finetune.setup import setup_training
from textnorm_t2i.trainers import WORLD


def redness(images: torch.Tensor, prompts: list[str]) -> torch.Tensor:
    """A prompt-independent reward that is easy to move: red minus the other channels."""
    return images[:, 0].mean(dim=(1, 2)) - images[:, 1:].mean(dim=(1, 2, 3))


def batch_gradients(model, policy, cfg, pool, args, shuffle: bool, seed: int, min_std: float | None = None,
                    batches: int | None = None) -> list[torch.Tensor]:
    """The policy gradient of each of ``batches`` independent batches (advantages shuffled if ``shuffle``), over
    the denoising steps with std >= ``min_std`` (default ``args.min_step_std``)."""
    rng = np.random.default_rng(seed)
    uncond = model.backend.encode([""])
    steps = train_step_indices(policy, args.min_step_std if min_std is None else min_std)
    out = []
    batches = batches or args.batches
    for b in range(batches):
        drawn = rng.integers(0, len(pool), size=args.prompts)
        prompts = [pool[i] for i in np.repeat(drawn, args.per_prompt)]
        traj = sample_trajectories(model.backend, prompts, policy, cfg.sampling.guidance_scale,
                                   torch.Generator().manual_seed(seed * 1000 + b))
        r = model.objective.score(traj.images, prompts).double().numpy().reshape(args.prompts, args.per_prompt)
        adv = torch.tensor(((r - r.mean(1, keepdims=True)) / (r.std(1, keepdims=True) + 1e-6)).ravel(),
                           dtype=torch.float32)
        if shuffle:
            adv = adv[torch.from_numpy(rng.permutation(len(adv)))]
        model.optimizer.zero_grad(set_to_none=True)
        for j in steps:
            rows = RLMinibatch.from_trajectories(traj, torch.arange(len(prompts)), [j], adv, uncond, model.device)
            loss, _ = rl_step_loss(model.unet, policy, rows, cfg)
            (loss / len(steps)).backward()
        out.append(torch.cat([p.grad.flatten() for p in model.params if p.grad is not None]).clone())
        print(f"  batch {b + 1}/{batches}{' (shuffled)' if shuffle else ''}", flush=True)
    return out


def cosines(grads: list[torch.Tensor], k: int) -> list[float]:
    """Cosines between every pair of disjoint sums of ``k`` consecutive batch gradients."""
    sums = [sum(grads[i:i + k]) for i in range(0, len(grads) - k + 1, k)]
    return [float(a @ b / (a.norm() * b.norm())) for i, a in enumerate(sums) for b in sums[i + 1:]]


def samples_for_cosine(cosine: float, samples: int, target: float = 0.5) -> float:
    """Samples per gradient at which two independent batch gradients would have cosine ``target``, from the
    cosine measured at ``samples`` (the mean of n samples: cos = |mu|^2 / (|mu|^2 + tr(Sigma) / n)); inf if no
    signal was measured.

    Example:
        >>> round(samples_for_cosine(0.2, 64))
        256
    """
    if cosine <= 0:
        return float("inf")
    signal_to_noise = cosine / ((1 - cosine) * samples)  # |mu|^2 / tr(Sigma) of one sample
    return target / ((1 - target) * signal_to_noise)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reward", default="shapes-clip-a", help="a reward name, or 'redness'")
    parser.add_argument("--batches", type=int, default=8, help="independent batches (a power of 2)")
    parser.add_argument("--prompts", type=int, default=8, help="prompts per batch")
    parser.add_argument("--per-prompt", type=int, default=8, help="samples per prompt (the advantage groups)")
    parser.add_argument("--min-step-std", type=float, default=0.05, help="as RL's min_step_std")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("-o", "--output", help="also write the results as JSON")
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    name = "shapes-clip-a" if args.reward == "redness" else args.reward
    cfg = load_finetune_config("rl", None, ["out=unused", f"reward.name={name}", "prompts.n=24",
                                           "lora.rank=8", "lora.alpha=8"])
    model = setup_training(cfg, torch.device("cpu"), reward=redness if args.reward == "redness" else None)
    policy = DDIMPolicy(model.pipe.scheduler.config, cfg.sampling.steps, cfg.sampling.eta)
    pool = training_prompts(cfg, truth=WORLD)
    t0 = time.time()
    real = batch_gradients(model, policy, cfg, pool, args, shuffle=False, seed=args.seed + 1)
    control = batch_gradients(model, policy, cfg, pool, args, shuffle=True, seed=args.seed + 2)
    # The same first batches over every stochastic step: how much the near-deterministic ones weigh.
    every = batch_gradients(model, policy, cfg, pool, args, shuffle=False, seed=args.seed + 1, min_std=0.0,
                            batches=2)
    norm_ratio = float(np.mean([e.norm() / r.norm() for e, r in zip(every, real)]))
    size = args.prompts * args.per_prompt
    rows = []
    print(f"reward {args.reward}; batches of {args.prompts} prompts x {args.per_prompt} samples; "
          f"{time.time() - t0:.0f} s")
    print(f"{'samples per gradient':>22} {'pairs':>6} {'cosine (rewards)':>18} {'cosine (shuffled)':>18}")
    k = 1
    while k <= args.batches // 2:
        c_real, c_ctrl = cosines(real, k), cosines(control, k)
        rows.append({"samples": size * k, "pairs": len(c_real), "cosine_mean": float(np.mean(c_real)),
                     "cosine_sd": float(np.std(c_real)), "control_mean": float(np.mean(c_ctrl)),
                     "control_sd": float(np.std(c_ctrl))})
        print(f"{size * k:>22} {len(c_real):>6} {np.mean(c_real):>+11.3f} ±{np.std(c_real):.3f} "
              f"{np.mean(c_ctrl):>+11.3f} ±{np.std(c_ctrl):.3f}")
        k *= 2
    needed = samples_for_cosine(rows[0]["cosine_mean"], rows[0]["samples"])
    print(f"samples per gradient for cosine 0.5 (from the {rows[0]['samples']}-sample cosine): {needed:.0f}")
    print(f"gradient norm over every stochastic step / over steps with std >= {args.min_step_std}: "
          f"{norm_ratio:.1f} (same batches)")
    if args.output:
        from textnorm_t2i.io import write_json_atomic

        write_json_atomic(args.output, {"date": time.strftime("%Y-%m-%d"), "reward": args.reward,
                                        "settings": vars(args) | {"output": None}, "rows": rows,
                                        "all_steps_gradient_norm_ratio": norm_ratio,
                                        "samples_for_cosine_0.5": needed,
                                        "seconds": round(time.time() - t0, 1)})


if __name__ == "__main__":
    main()

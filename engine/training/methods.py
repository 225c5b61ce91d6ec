"""TRL's trainers for the methods beyond SFT: `method_trainer(spec, model, tokenizer, data, …)`.

TRL is pinned to 1.16 (pyproject.toml), whose trainers live at:

- dpo: `trl.DPOTrainer` / `trl.DPOConfig` (beta, loss_type);
- kto: `trl.KTOTrainer` / `trl.KTOConfig` (beta, desirable_weight, undesirable_weight);
- orpo: `trl.experimental.orpo.ORPOTrainer` / `ORPOConfig` (beta: the odds-ratio weight λ);
- simpo: `trl.experimental.cpo.CPOTrainer` / `CPOConfig` with loss_type "simpo" and cpo_alpha 0
  (beta, simpo_gamma), which is SimPO;
- grpo: `trl.GRPOTrainer` / `trl.GRPOConfig` (num_generations, max_completion_length,
  temperature, beta = the KL coefficient, reward_weights) with the reward functions of
  engine.training.rewards (a judge reward's llama.cpp process is closed when training ends:
  `CloseRewards`).

The model arrives with its LoRA adapter attached (engine.training.trainer.build_trainer), so no
reference model is loaded: DPO, KTO and GRPO with a KL coefficient take the reference's log
probabilities from the same model with the adapter disabled (TRL's peft trick); ORPO and SimPO
need no reference. Each config starts from the run's TrainingArguments
(engine.training.options.training_arguments: schedule, checkpoints, precision, logging every
step), so checkpoints, pause, resume and stop work as for SFT, and the event callback writes TRL's
own metrics (`rewards/margins`, `kl`, `reward`, `rewards/<name>/mean`, …) into `metric` events
under their TRL names (engine.training.callback).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from transformers import Trainer, TrainerCallback, TrainingArguments

from engine.spec import JobSpec

TRL_METHODS = ("dpo", "orpo", "simpo", "kto", "grpo")

# the TrainingArguments of a run for a config class and the method's own settings
Arguments = Callable[..., TrainingArguments]


def method_trainer(
    spec: JobSpec,
    model: Any,
    tokenizer: Any,
    data: Any,
    callbacks: list[TrainerCallback],
    arguments: Arguments,
    max_len: int,
) -> Trainer:
    """The TRL trainer of the run's method on the LoRA `model` and the prepared rows `data`
    (engine.data.method_data); `arguments(config_class, **settings)` builds its config and
    `max_len` is the run's max sequence length (prompt and answer together)."""
    m = spec.method
    method = m.method
    seq = {"max_length": max_len}
    common = {
        "model": model,
        "train_dataset": data.train,
        "processing_class": tokenizer,
        "callbacks": callbacks,
    }
    if method == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        from engine.training.rewards import reward_functions

        rewards = reward_functions(spec.rewards)
        args = arguments(
            GRPOConfig,
            num_generations=m.num_generations,
            max_completion_length=m.max_completion_length,
            temperature=m.temperature,
            beta=m.kl_coef,
            reward_weights=rewards.weights,
        )
        common["callbacks"] = [*callbacks, CloseRewards(rewards)]
        return GRPOTrainer(reward_funcs=rewards.functions, args=args, **common)
    common["eval_dataset"] = data.eval
    if method == "dpo":
        from trl import DPOConfig, DPOTrainer

        args = arguments(DPOConfig, beta=m.beta, loss_type=[m.loss_type], **seq)
        return DPOTrainer(ref_model=None, args=args, **common)
    if method == "kto":
        from trl import KTOConfig, KTOTrainer

        args = arguments(
            KTOConfig,
            beta=m.beta,
            desirable_weight=m.desirable_weight,
            undesirable_weight=m.undesirable_weight,
            **seq,
        )
        return KTOTrainer(ref_model=None, args=args, **common)
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # pinned: we know it is experimental
    if method == "orpo":
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

        return ORPOTrainer(args=arguments(ORPOConfig, beta=m.beta, **seq), **common)
    if method == "simpo":
        from trl.experimental.cpo import CPOConfig, CPOTrainer

        args = arguments(
            CPOConfig,
            loss_type="simpo",
            cpo_alpha=0.0,
            beta=m.beta,
            simpo_gamma=m.simpo_gamma,
            **seq,
        )
        return CPOTrainer(args=args, **common)
    raise ValueError(f"{method!r} is not one of TRL's methods: {', '.join(TRL_METHODS)}")


class CloseRewards(TrainerCallback):
    """Ends the judge processes of a GRPO run's rewards when training ends (completed, stopped,
    paused or cancelled), before the samples and the export; a worker that dies takes them with
    it (a judge process ends when its input closes)."""

    def __init__(self, rewards: Any):
        self.rewards = rewards  # engine.training.rewards.RewardSet

    def on_train_end(self, args, state, control, **kwargs):
        self.rewards.close()

    def warnings(self) -> list[str]:
        """What the run should say about its rewards (engine.training.rewards.RewardSet)."""
        return self.rewards.warnings()

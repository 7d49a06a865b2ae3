"""Training: LoRA adaptation of the base model and gate predictors, with resumable checkpoints and DDP."""

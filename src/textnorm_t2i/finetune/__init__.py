"""Fine-tuning a text-to-image model against a reward: best-of-n, reward-weighted SFT, RL (DDPO/DPOK)."""

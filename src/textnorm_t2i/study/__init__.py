"""The study: does optimising a TextNorm reward give better-aligned models than the raw reward? Its stages
(prompts, temperatures, the shared best-of-n pool, the map, SFT, RL, side-by-side comparison), config and report."""
